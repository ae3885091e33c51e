"""Ahead-of-time compile of every Triton kernel for sm_90, without a GPU: every dtype, layout
and mode the ops can launch, through Triton's own compiler and its bundled ptxas. Fails on a
compile error or a register spill (local memory in cuobjdump's resource usage), and prints each
kernel's registers. With ``--build-log`` it
also reads the ``ptxas info`` lines of the CUDA extension's build (``CPRL_FAST_PTXAS_VERBOSE=1``
adds ``-Xptxas=-v`` to nvcc) and fails on a spill there too.

    python -m bench.aot_check                         # Triton kernels
    python -m bench.aot_check --build-log build.log   # and the .cu kernels of that build

CI runs it (``tests/test_aot_compile.py``); a compile error here is one a GPU would hit.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, never interpret

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
FEATURE_DTYPES = {"fp32": tl.float32, "bf16": tl.float32, "fp16": tl.float32, "fp64": tl.float64}


@dataclass(frozen=True)
class KernelPlan:
    """How one Triton kernel is launched: which pointers hold features (the others hold
    op-math arrays), its block constexprs and the boolean switches to enumerate."""

    module: str
    name: str
    feature_ptrs: frozenset[str]
    blocks: tuple[dict, ...]  #: the block-size constexprs of each launch geometry
    switches: tuple[str, ...] = ()
    num_warps: int = 4  #: as the launch passes it
    dtypes: tuple[str, ...] = tuple(FEATURE_DTYPES)  #: the feature dtypes it is launched for


def plans() -> list[KernelPlan]:
    from cprl_fast.kernels._common import (
        ELEMENTWISE_BLOCK,
        OFFSET_GRAD_BLOCK,
        RANK_BLOCK_I,
        RANK_BLOCK_J,
        SORT_MAX_C,
        TILE_WARPS,
        WIDE_TILE_WARPS,
    )

    reduce = ({"BLOCK_C": 64, "BLOCK_P": 32}, {"BLOCK_C": 8, "BLOCK_P": 256})
    rank = ({"BLOCK_I": RANK_BLOCK_I, "BLOCK_J": RANK_BLOCK_J},)
    element = ({"BLOCK": ELEMENTWISE_BLOCK},)
    rows = ({"BLOCK": ELEMENTWISE_BLOCK}, {"BLOCK": 128})  # Geometry.rows: 128 to 1024
    return [
        KernelPlan("rank_mask", "_channel_sums", frozenset({"f_ptr"}), reduce, (), TILE_WARPS),
        KernelPlan("rank_mask", "_masks", frozenset(), rank, ("FROM_BITS", "SOFT"), TILE_WARPS),
        KernelPlan(  # float32 op-math only (its keys hold a float32's bits and an index)
            "rank_mask",
            "_sorted_masks",
            frozenset(),
            ({"BLOCK": 16}, {"BLOCK": 256}, {"BLOCK": SORT_MAX_C}),
            (),
            TILE_WARPS,
            ("fp32", "bf16", "fp16"),
        ),
        KernelPlan(
            "rank_mask",
            "_channel_elementwise",
            frozenset({"x_ptr", "out_ptr"}),
            rows,
            ("ADD", "CHANNELS_LAST"),
        ),
        KernelPlan(
            "rank_mask",
            "_backward_pass",
            frozenset({"f_ptr", "g_ptr", "gf_ptr"}),
            reduce,
            ("SOFT",),
            TILE_WARPS,
        ),
        KernelPlan(
            "rank_mask",
            "_offset_grad",
            frozenset(),
            ({"BLOCK": OFFSET_GRAD_BLOCK},),
            ("FROM_BITS", "HAS_GRAD_MASK", "SOFT"),
            TILE_WARPS,
        ),
        KernelPlan("rank_mask", "_soft_rank_grad", frozenset(), rank, ("FROM_BITS",), TILE_WARPS),
        KernelPlan(
            "intervene",
            "_forward",
            frozenset({"f_ptr", "t_ptr", "out_ptr"}),
            rows,
            ("NC", "CHANNELS_LAST"),
        ),
        KernelPlan(
            "intervene",
            "_backward_pass",
            frozenset({"g_ptr", "f_ptr", "t_ptr", "gf_ptr", "gt_ptr"}),
            reduce,
            ("NC",),
            WIDE_TILE_WARPS,
        ),
        KernelPlan(
            "attack_step",
            "_attack_step",
            frozenset({"x_ptr", "g_ptr", "x0_ptr", "out_ptr"}),
            element,
            ("FROM_BITS",),
        ),
    ]


def signature(fn, plan: KernelPlan, dtype: str, switches: dict, index: str) -> tuple[dict, dict]:
    acc = FEATURE_DTYPES[dtype]
    acc_ptr = "*fp64" if acc == tl.float64 else "*fp32"
    sig, const = {}, {}
    for arg in fn.arg_names:
        if arg in switches:
            sig[arg], const[arg] = "constexpr", switches[arg]
        elif arg == "ACC":
            sig[arg], const[arg] = "constexpr", acc
        elif arg.startswith("BLOCK"):
            sig[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            sig[arg] = f"*{dtype}" if arg in plan.feature_ptrs else acc_ptr
        elif arg in ("temperature", "tau", "alpha", "eps", "lo", "hi"):
            sig[arg] = "i64" if switches.get("FROM_BITS") else "fp32"  # float64: the IEEE bits
        else:  # sizes, strides, counts
            sig[arg] = index
    return sig, const


CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
USED = re.compile(r"Used (\d+) registers")
SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)")


def cubin_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, local-memory bytes) of a compiled kernel, from cuobjdump -res-usage; local
    memory (STACK or LOCAL above zero) is where register spills go."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", str(path)], capture_output=True,
                             text=True, check=True)  # fmt: skip
    m = RESOURCES.search(out.stdout)
    if m is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output: {out.stdout[-200:]}")
    return int(m.group(1)), int(m.group(2)) + int(m.group(3))


def check_triton() -> list[str]:
    """Compiles every variant; returns the failures (empty when all compile without spills)."""
    import importlib

    failures = []
    rows = 0
    for plan in plans():
        fn = getattr(importlib.import_module(f"cprl_fast.kernels.{plan.module}"), plan.name)
        worst = (0, 0)
        for dtype, blocks, index, values in itertools.product(
            plan.dtypes, plan.blocks, ("i32", "i64"),
            itertools.product((False, True), repeat=len(plan.switches)),
        ):  # fmt: skip
            switches = dict(zip(plan.switches, values, strict=True))
            sig, const = signature(fn, plan, dtype, switches, index)
            const.update(blocks)
            what = f"{plan.module}.{plan.name} {dtype} {index} {blocks} {switches}"
            try:
                compiled = triton.compile(ASTSource(fn, sig, constexprs=const), target=TARGET,
                                          options={"num_warps": plan.num_warps})  # fmt: skip
                regs, spills = cubin_usage(compiled.asm["cubin"])
            except Exception as err:
                failures.append(f"{what}: {type(err).__name__}: {str(err).splitlines()[0]}")
                continue
            rows += 1
            worst = max(worst, (regs, spills))
            if spills:
                failures.append(f"{what}: {spills} bytes of local memory (register spills)")
        print(f"{plan.module}.{plan.name}: up to {worst[0]} registers, spills {worst[1]} B",
              flush=True)  # fmt: skip
    print(f"triton: {rows} variants compiled for sm_90, {len(failures)} failure(s)")
    return failures


def check_build_log(path: Path) -> list[str]:
    """The ptxas lines of an nvcc build with -Xptxas=-v: a failure per kernel that spills."""
    text = path.read_text(errors="replace")
    failures, kernels = [], 0
    current = "?"
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
        m = SPILL.search(line)
        if m:
            kernels += 1
            if int(m.group(1)) + int(m.group(2)):
                failures.append(f"CUDA kernel {current[:80]}: {line.strip()}")
        m = USED.search(line)
        if m:
            print(f"cuda {current[:70]}: {m.group(1)} registers")
    if kernels == 0:
        failures.append(f"{path}: no ptxas -v lines (build with CPRL_FAST_PTXAS_VERBOSE=1)")
    print(f"cuda: {kernels} kernels in {path}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--build-log", type=Path, help="an nvcc build log with ptxas -v lines")
    args = parser.parse_args(argv)
    failures = check_triton()
    if args.build_log is not None:
        failures += check_build_log(args.build_log)
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
