"""The CUDA kernels (``csrc/cuda/*.cu``), run on CPU tensors under the emulator of
``csrc/tests/cuda_emu/cuda_emu.h`` (built by ``tests/cuda_emulation.py``), against the C++
CPU kernels: every dtype, both dense layouts and unaligned pointers, at shapes that take each
launch path (8, 16 and 32 lanes per NCHW row; 16-byte packs and single elements; one and
several NHWC pixel splits; each radix-sort block size and the bitonic sort past 4096
channels; one and several blocks of the offset gradient; the soft rank in shared and in
global memory). Results must not depend on the order the emulated threads run in, nor on the
number of multiprocessors. This checks indexing, launch geometry, shuffles and barriers on a
machine without a GPU; the GPU itself (memory model, speed) is tested only on one."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import cuda_emulation
import pytest
import torch

from cprl_fast.ops import SPECS
from cprl_fast.ops.spec import unaligned

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler"),
]

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
PLACEMENTS = ("contiguous", "channels_last", "unaligned")

#: shapes that take every launch path of rank_mask and intervene (see the module docstring)
MAP_SHAPES = (
    (2, 5, 3, 7),  # odd rows: single elements, 8 lanes
    (3, 40, 20, 20),  # 400-pixel rows: 16 lanes (float32 packs); 2 NHWC splits
    (2, 20, 24, 24),  # 576-pixel rows: 32 lanes (float32 packs); 3 NHWC splits
    (2, 70, 17, 17),  # 289 pixels, 70 channels: NHWC single elements over 2 splits
    (2, 300, 2, 3),  # radix sort, 128 threads x 8
    (4, 1100, 1, 1),  # radix sort, 256 threads x 8; offset gradient over 2 blocks
    (2, 3000, 1, 1),  # radix sort, 512 threads x 8
)
BITONIC_SHAPE = (2, 4100, 1, 2)  # past 4096 channels: the bitonic sort in global memory
SOFT_GLOBAL_SHAPE = (1, 6200, 1, 1)  # float64 means past 48 KiB: the soft rank in global memory


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cuda_emulation.build(tmp_path_factory.mktemp("cuda_emu"))
    return cuda_emulation.op


@contextmanager
def environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sample(spec, shape, dtype, placement, variant, seed=7):
    layout = "channels_last" if placement == "channels_last" else "contiguous"
    args = spec.sample(shape, dtype=dtype, device="cpu", layout=layout, seed=seed, **variant)
    return unaligned(args) if placement == "unaligned" else args


def outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def assert_same(got, want, tol: dict) -> None:
    for g, w in zip(outputs(got), outputs(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype and g.stride() == w.stride()
        torch.testing.assert_close(g, w, **tol)


def check(emulated, spec, shape, dtype, placement, variant) -> None:
    """Forward (and backward) of the emulated CUDA kernels against the CPU kernels."""
    args = sample(spec, shape, dtype, placement, variant)
    tol = spec.tolerance(dtype, variant)
    forward = emulated(spec.name)(*args)
    assert_same(forward, spec.op(*args), tol)
    if spec.name == "rank_mask" and not variant.get("soft"):
        assert torch.equal(forward[1], spec.op(*args)[1])  # the same ranks, exactly
    if spec.backward_op:
        bargs = spec.backward_sample(args, 13)
        want = getattr(torch.ops.cprl_fast, spec.backward_op)(*bargs)
        assert_same(emulated(spec.backward_op)(*bargs), want, tol)


MAP_CASES = [
    (spec, variant)
    for spec in (SPECS["rank_mask"], SPECS["intervene"])
    for variant in spec.variants
]
MAP_IDS = [f"{s.name}-{'-'.join(map(str, v.values()))}" for s, v in MAP_CASES]


@pytest.mark.parametrize(("spec", "variant"), MAP_CASES, ids=MAP_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_map_ops_match_cpu_kernels(emulated, spec, variant, dtype, placement):
    for shape in MAP_SHAPES:
        if variant.get("soft") and shape[1] > 2048:
            continue  # a sort size, no path of the soft rank's; its C^2 sums cost seconds here
        check(emulated, spec, shape, dtype, placement, variant)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=str)
@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
def test_hard_rank_past_radix_sort(emulated, dtype, layout):
    check(emulated, SPECS["rank_mask"], BITONIC_SHAPE, dtype, layout, {"soft": False})


def test_soft_rank_in_global_memory(emulated):
    spec = SPECS["rank_mask"]
    args = sample(spec, SOFT_GLOBAL_SHAPE, torch.float64, "contiguous", {"soft": True})
    assert_same(emulated("rank_mask")(*args), spec.op(*args), spec.tolerance(torch.float64, {}))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_attack_step_matches_cpu_kernel(emulated, dtype, placement):
    spec = SPECS["attack_step"]
    for shape in (*spec.shapes, (2, 3, 7, 5)):
        check(emulated, spec, shape, dtype, placement, {})
        args = sample(spec, shape, dtype, placement, {})
        out = torch.full_like(args[0], float("nan"))
        emulated("attack_step_out")(*args, out)
        torch.testing.assert_close(out, spec.op(*args), **spec.tolerance(dtype, {}))


@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
def test_results_do_not_depend_on_thread_order_or_multiprocessors(emulated, layout):
    """Bit for bit the same under other thread orders and multiprocessor counts: no race the
    emulator can see, and fixed-order reductions (no float atomics)."""
    spec = SPECS["rank_mask"]
    for variant in spec.variants:
        args = sample(spec, (2, 40, 20, 20), torch.float32, layout, variant)
        bargs = spec.backward_sample(args, 13)
        runs = []
        for seed, sms in (("1", "2"), ("2", "2"), ("3", "1"), ("4", "132")):
            with environment(CPRL_EMU_SEED=seed, CPRL_EMU_SMS=sms):
                runs.append(
                    (*emulated("rank_mask")(*args), *emulated("rank_mask_backward")(*bargs))
                )
        for run in runs[1:]:
            for a, b in zip(run, runs[0], strict=True):
                assert torch.equal(a, b)


def test_emulator_finds_a_missing_barrier(emulated):
    """Its own check: a thread that reads its neighbour's shared-memory write gets it after a
    barrier, under every thread order, and without one gets something else under some order.
    (Static shared arrays outlive a block in the emulator, so each call writes new values: a
    stale value from an earlier call would pass for the right one.)"""
    neighbours = torch.remainder(torch.arange(64) + 1, 64).float()
    racy = []
    for seed in range(4):
        with environment(CPRL_EMU_SEED=str(seed)):
            offset = 100.0 * seed
            got = emulated("selftest_neighbour")(offset + 0.5, False)
            racy.append(not torch.equal(got, neighbours + offset + 0.5))
            got = emulated("selftest_neighbour")(offset + 0.75, True)
            assert torch.equal(got, neighbours + offset + 0.75)
    assert any(racy)


def test_emulator_refuses_a_shuffle_some_lanes_do_not_reach(emulated):
    got = emulated("selftest_shuffle")(64)
    lanes = torch.arange(64)
    torch.testing.assert_close(got, torch.where(lanes % 32 < 31, lanes + 1, lanes).float())
    with pytest.raises(RuntimeError, match="warp shuffle that 8 lane"):
        emulated("selftest_shuffle")(56)
