"""The CUDA kernels (``csrc/cuda/*.cu``), run on CPU tensors under the emulator of
``csrc/tests/cuda_emu/cuda_emu.h`` (built by ``tests/cuda_emulation.py``), against the C++
CPU kernels: every dtype, both dense layouts and unaligned pointers, at shapes that take each
launch path (8, 16 and 32 lanes per NCHW row; 16-byte packs and single elements; one and
several NHWC pixel splits; each radix-sort block size and the bitonic sort past 4096
channels; one and several blocks of the offset gradient; the soft rank in shared and in
global memory; with and without a gradient of the mask), and with NaN, infinite and tied
channel means. Results must not depend on the order the emulated threads run in, nor on the
number of multiprocessors, and no case may touch memory outside its tensors (AddressSanitizer)
or hit undefined behaviour (UBSan). This checks indexing, launch geometry, shuffles and
barriers on a machine without a GPU; the GPU itself (memory model, speed) is tested only on
one."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cuda_emulation
import pytest
import torch
from cuda_emulation import PLACEMENTS, Case, check, sample, special_cases

from cprl_fast.ops import SPECS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler"),
]


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cuda_emulation.build(tmp_path_factory.mktemp("cuda_emu"))
    return cuda_emulation.op


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_nan_infinite_and_tied_channels_match_cpu_kernel(emulated, placement):
    for case in special_cases(placement):
        check(case)


@pytest.mark.parametrize("placement", ("contiguous", "channels_last"))
def test_results_do_not_depend_on_thread_order_or_multiprocessors(emulated, placement, monkeypatch):
    """Bit for bit the same under other thread orders and multiprocessor counts: no race the
    emulator can see, and fixed-order reductions (no float atomics)."""
    spec = SPECS["rank_mask"]
    for variant in spec.variants:
        args = sample(Case("rank_mask", (2, 40, 20, 20), torch.float32, placement, variant))
        bargs = spec.backward_sample(args, 13)
        runs = []
        for seed, sms in (("1", "2"), ("2", "2"), ("3", "1"), ("4", "132")):
            monkeypatch.setenv("CPRL_EMU_SEED", seed)  # read by every emulated launch
            monkeypatch.setenv("CPRL_EMU_SMS", sms)
            forward = emulated("rank_mask")(*args)
            runs.append((*forward, *emulated("rank_mask_backward")(*bargs)))
        for run in runs[1:]:
            for a, b in zip(run, runs[0], strict=True):
                assert torch.equal(a, b)


def test_emulator_finds_a_missing_barrier(emulated, monkeypatch):
    """Its own check: a thread that reads its neighbour's shared-memory write gets it after a
    barrier, under every thread order, and without one gets something else under some order.
    (Static shared arrays outlive a block in the emulator, so each call writes new values: a
    stale value from an earlier call would pass for the right one.)"""
    neighbours = torch.remainder(torch.arange(64) + 1, 64).float()
    racy = []
    for seed in range(4):
        monkeypatch.setenv("CPRL_EMU_SEED", str(seed))
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


@pytest.mark.skipif(not cuda_emulation.has_asan(), reason="the compiler has no ASan runtime")
def test_every_case_under_address_sanitizer_and_ubsan(tmp_path):
    """The sweep (cuda_emulation.cases: every dtype and placement at the map shapes, the
    sorts, attack_step), built under ASan and UBSan in a process of its own (the ASan runtime
    must be loaded first): a mismatch with the CPU kernels, a read or write outside a tensor's
    memory, or undefined behaviour such as a signed overflow in the index arithmetic fails it."""
    result = subprocess.run(
        [sys.executable, cuda_emulation.__file__, str(tmp_path / "build"), "--sanitize"],
        env=cuda_emulation.sanitized_environment(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert " cases: the emulated CUDA kernels match the CPU kernels" in result.stdout
