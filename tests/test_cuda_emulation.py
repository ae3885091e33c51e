"""How ``tests/cuda_emulation.py`` rewrites a CUDA source for the CPU emulator (its launches,
dynamic shared memory and registrations) and which op schemas it declares: the pure-Python part,
without a build (``tests/test_cuda_emulated.py`` builds and runs the result)."""

from __future__ import annotations

import re

import pytest
from cuda_emulation import CSRC, rewrite, rewrite_launches, schemas


def test_a_launch_becomes_a_call_of_the_emulator():
    src = "  kernel<V, acc_t><<<grid, dim3(32, 8), 0, stream>>>(sz, f(a, b), p);\n"
    assert rewrite_launches(src) == (
        "  ::cprl_emu::launch(::cprl_emu::Launch(grid, dim3(32, 8), 0, stream), "
        "[&] { kernel<V, acc_t>(sz, f(a, b), p); });\n"
    )


def test_a_launch_over_several_lines_keeps_its_arguments():
    src = (
        "x = 1;\n    sum_kernel<acc_t><<<ceil_div(n, 256), 256, 0,\n"
        "                       at::cuda::getCurrentCUDAStream()>>>(n, a,\n"
        "                                                   b);\nC10_CHECK();\n"
    )
    out = rewrite_launches(src)
    launch = (
        "::cprl_emu::launch(::cprl_emu::Launch(ceil_div(n, 256), 256, 0, "
        "at::cuda::getCurrentCUDAStream()), [&] { sum_kernel<acc_t>(n, a,"
    )
    assert out.startswith("x = 1;\n    " + launch)
    assert out.endswith("b); });\nC10_CHECK();\n")


def test_dynamic_shared_memory_and_registrations_are_rewritten():
    src = "extern __shared__ unsigned char smem_raw[];\nTORCH_LIBRARY_IMPL(cprl_fast, CUDA, m) {}\n"
    out = rewrite(src)
    assert "unsigned char* smem_raw = reinterpret_cast<unsigned char*>(" in out
    assert "TORCH_LIBRARY_IMPL(cprl_fast_emu, CPU, m)" in out and "CUDA" not in out


@pytest.mark.parametrize("path", sorted((CSRC / "cuda").glob("*.cu*")), ids=lambda p: p.name)
def test_no_launch_or_cuda_registration_is_left_in_the_kernels(path):
    out = rewrite(path.read_text())
    assert "<<<" not in out and ">>>" not in out
    assert not re.search(r"TORCH_LIBRARY_IMPL\(\s*cprl_fast\s*,\s*CUDA", out)
    assert "extern __shared__" not in out


def test_every_op_with_kernels_is_declared():
    names = [s.split("(")[0] for s in schemas()]
    assert names == ["rank_mask", "ca_activation", "rank_mask_backward", "rank_mask_vjp",
                     "intervene", "intervene_backward", "intervene_vjp", "attack_step",
                     "attack_step_out"]  # fmt: skip
