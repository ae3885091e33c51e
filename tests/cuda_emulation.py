"""Builds the CUDA kernels' sources (``csrc/cuda/*.cu``) for the CPU emulator of
``csrc/tests/cuda_emu/cuda_emu.h`` and loads them as the ops ``torch.ops.cprl_fast_emu.*``
(the schemas of ``csrc/ops.cpp``, registered for CPU tensors).

The sources are copied and rewritten, not edited: ``kernel<<<cfg>>>(args);`` becomes
``::cprl_emu::launch(::cprl_emu::Launch(cfg), [&] { kernel(args); });``, a dynamic
``extern __shared__`` array becomes a pointer to the emulated block's shared memory, and the
``CUDA`` registrations become ``cprl_fast_emu``'s ``CPU`` ones. The stand-ins for the CUDA
headers the kernels include (ATen's CUDA context, the guard, CUB's block radix sort) come
first on the include path. ``tests/test_cuda_emulated.py`` compares these ops with the CPU
kernels, and runs the emulator's own fault cases (``csrc/tests/cuda_emu/self_test.cu``: the
ops ``selftest_neighbour`` and ``selftest_shuffle``).

As a script, ``python tests/cuda_emulation.py BUILD_DIR [--sanitize]`` builds them (under
AddressSanitizer and UBSan with ``--sanitize``; run it with :func:`sanitized_environment`: the
ASan runtime must be loaded first) and compares every case of :func:`cases`, printing the ones
that fail; under the sanitizers an access outside a tensor's memory is an error too, as
compute-sanitizer's memcheck would report on a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
EMU = CSRC / "tests" / "cuda_emu"
NAMESPACE = "cprl_fast_emu"

_LAUNCH = re.compile(r"<<<(?P<cfg>.*?)>>>\s*\(", re.DOTALL)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?P<type>[\w ]+?)\s+(?P<name>\w+)\[\];")
_REGISTRATION = re.compile(r"TORCH_LIBRARY_IMPL\(cprl_fast,\s*CUDA,")
_SCHEMA = re.compile(r'm\.def\(\s*((?:"[^"]*"\s*)+)\);')


def _closing_paren(text: str, open_at: int) -> int:
    """The index of the parenthesis that closes the one at ``open_at``."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses after offset {open_at}")


def rewrite_launches(text: str) -> str:
    """Every ``kernel<<<cfg>>>(args)`` statement of ``text`` as a call of the emulator's
    ``launch``. The kernel is what precedes ``<<<`` on its line."""
    out, pos = [], 0
    for m in _LAUNCH.finditer(text):
        if m.start() < pos:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        kernel = text[line_start : m.start()]
        indent = kernel[: len(kernel) - len(kernel.lstrip())]
        close = _closing_paren(text, m.end() - 1)
        args = text[m.end() : close]
        cfg = " ".join(m.group("cfg").split())
        out.append(text[pos:line_start])
        out.append(
            f"{indent}::cprl_emu::launch(::cprl_emu::Launch({cfg}), [&] {{ "
            f"{kernel.strip()}({args}); }})"
        )
        pos = close + 1
    out.append(text[pos:])
    return "".join(out)


def rewrite(text: str) -> str:
    """A CUDA source as the emulator compiles it."""
    text = rewrite_launches(text)
    text = _EXTERN_SHARED.sub(
        lambda m: (
            f"{m['type']}* {m['name']} = reinterpret_cast<{m['type']}*>("
            "::cprl_emu::dynamic_smem());"
        ),
        text,
    )
    return _REGISTRATION.sub(f"TORCH_LIBRARY_IMPL({NAMESPACE}, CPU,", text)


def schemas() -> list[str]:
    """The op schemas of ``csrc/ops.cpp`` but ``cuda_built`` (a function of its own)."""
    text = (CSRC / "ops.cpp").read_text()
    found = ["".join(re.findall(r'"([^"]*)"', m.group(1))) for m in _SCHEMA.finditer(text)]
    return [s for s in found if not s.startswith("cuda_built")]


def _write_sources(src: Path) -> list[Path]:
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(CSRC, src / "csrc", ignore=shutil.ignore_patterns("tests"))
    sources = []
    for path in sorted((src / "csrc" / "cuda").iterdir()):
        text = rewrite(path.read_text())
        if path.suffix == ".cu":
            path.unlink()
            path = path.with_name(path.stem + "_emu.cpp")
            sources.append(path)
        path.write_text(text)
    self_test = src / "self_test_emu.cpp"
    self_test.write_text(rewrite((EMU / "self_test.cu").read_text()))
    sources.append(self_test)
    defs = "\n".join(f'  m.def("{s}");' for s in schemas())
    ops = src / "emu_ops.cpp"
    ops.write_text(f"#include <torch/library.h>\n\nTORCH_LIBRARY({NAMESPACE}, m) {{\n{defs}\n}}\n")
    return [ops, *sources]


SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                  "-fno-omit-frame-pointer"]  # fmt: skip


def build(build_dir: Path, sanitize: bool = False, verbose: bool = False) -> None:
    """Compiles the rewritten sources into ``build_dir`` and loads them: afterwards
    ``torch.ops.cprl_fast_emu.<op>`` runs the CUDA kernels of ``<op>`` on CPU tensors.
    ``sanitize``: under AddressSanitizer and UBSan (the process needs
    :func:`sanitized_environment`)."""
    from torch.utils import cpp_extension

    sources = _write_sources(build_dir / "src")
    out = build_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name="cprl_fast_cuda_emu",
        sources=[str(s) for s in sources],
        extra_include_paths=[str(EMU / "include")],
        extra_cflags=["-O1", "-fvisibility=hidden", *(SANITIZE_FLAGS if sanitize else [])],
        extra_ldflags=SANITIZE_FLAGS[:1] if sanitize else [],
        build_directory=str(out),
        is_python_module=False,
        verbose=verbose,
    )


def _runtime_library(name: str) -> str:
    """The compiler's path of library ``name`` (the bare name when it has none)."""
    return subprocess.run(["c++", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def has_asan() -> bool:
    """Whether the C++ compiler has an AddressSanitizer runtime to build and preload."""
    return shutil.which("c++") is not None and Path(_runtime_library("libasan.so")).is_file()


def sanitized_environment() -> dict[str, str]:
    """The environment of a process that loads the sanitized build: the compiler's ASan
    runtime preloaded (before Python's own libraries; with the C++ runtime, whose exceptions
    ASan intercepts), leak checks off (the interpreter keeps its objects to the end)."""
    runtime = [_runtime_library(lib) for lib in ("libasan.so", "libstdc++.so")]
    # small fiber stacks: ASan clears the shadow of a whole stack on every switch to it
    return {**os.environ, "LD_PRELOAD": " ".join(runtime), "ASAN_OPTIONS": "detect_leaks=0",
            "UBSAN_OPTIONS": "print_stacktrace=1", "CPRL_EMU_STACK_KIB": "16"}  # fmt: skip


def op(name: str) -> torch._ops.OpOverloadPacket:
    """The emulated CUDA kernel of op ``name``."""
    return getattr(getattr(torch.ops, NAMESPACE), name)


# -- the cases: shapes that take every launch path -------------------------------------------

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
PLACEMENTS = ("contiguous", "channels_last", "unaligned")

#: shapes that take every launch path of the passes over a map (rank_mask's and intervene's)
MAP_SHAPES = (
    (2, 5, 3, 7),  # odd rows: single elements, 8 lanes
    (3, 40, 20, 20),  # 400-pixel rows: 16 lanes (float32 packs); 2 NHWC splits
    (2, 20, 24, 24),  # 576-pixel rows: 32 lanes (float32 packs); 3 NHWC splits
    (2, 70, 17, 17),  # 289 pixels, 70 channels: NHWC single elements over 2 splits
    (2, 300, 2, 3),  # the radix sort's 128 x 8 block
)
#: rank_mask's sorts past 1024 channels (on the op-math dtype: float32 or float64)
SORT_SHAPES = (
    (4, 1100, 1, 1),  # radix sort, 256 threads x 8; the offset gradient over 2 blocks
    (2, 3000, 1, 1),  # radix sort, 512 threads x 8
    (2, 4100, 1, 2),  # past 4096 channels: the bitonic sort in global memory
)
SOFT_GLOBAL_SHAPE = (1, 6200, 1, 1)  # float64 means past 48 KiB: the soft rank in global memory


@dataclass(frozen=True)
class Case:
    """One comparison of an emulated CUDA op with the CPU kernel: ``spec`` names the op's
    :class:`cprl_fast.ops.spec.OpSpec`; its backward too unless ``forward_only``."""

    spec: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    placement: str  #: one of PLACEMENTS
    variant: dict = field(default_factory=dict)
    forward_only: bool = False
    #: rank_mask's f with channels whose means are NaN, +inf, -inf, and tied zeros (one -0)
    special: bool = False


def map_cases(spec: str, variant: dict, dtype: torch.dtype, placement: str) -> list[Case]:
    """rank_mask's or intervene's cases at MAP_SHAPES."""
    return [Case(spec, shape, dtype, placement, variant) for shape in MAP_SHAPES]


def sort_cases(dtype: torch.dtype) -> list[Case]:
    """rank_mask's cases at SORT_SHAPES (the soft rank at the first: a sort size is no path
    of its own, and its C^2 sums cost seconds here), and the soft rank in global memory."""
    out = [Case("rank_mask", shape, dtype, "contiguous", {"soft": False}) for shape in SORT_SHAPES]
    out.append(Case("rank_mask", SORT_SHAPES[0], dtype, "contiguous", {"soft": True}))
    if dtype == torch.float64:
        out.append(Case("rank_mask", SOFT_GLOBAL_SHAPE, dtype, "contiguous", {"soft": True},
                        forward_only=True))  # fmt: skip
    return out


def special_cases(placement: str) -> list[Case]:
    """rank_mask's float32 cases with NaN, infinite and tied channel means (see
    :func:`sample`), hard and soft rank, at MAP_SHAPES past 4 channels and SORT_SHAPES."""
    return [
        Case("rank_mask", shape, torch.float32, placement, {"soft": soft}, special=True)
        for shape in (*MAP_SHAPES, *SORT_SHAPES)
        for soft in (False, True)
        if shape[1] > 4 and not (soft and shape[1] > 2048)
    ]


def attack_step_cases(dtype: torch.dtype, placement: str) -> list[Case]:
    from cprl_fast.ops import SPECS

    shapes = (*SPECS["attack_step"].shapes, (2, 3, 7, 5))
    return [Case("attack_step", shape, dtype, placement) for shape in shapes]


def cases() -> Iterator[Case]:
    """The sweep: every dtype and placement at the map shapes, the sorts, attack_step (the
    special values, which take no other path, are left to the in-process tests)."""
    from cprl_fast.ops import SPECS

    for name in ("rank_mask", "intervene"):
        for variant in SPECS[name].variants:
            for dtype in DTYPES:
                for placement in PLACEMENTS:
                    yield from map_cases(name, variant, dtype, placement)
    for dtype in (torch.float32, torch.float64):
        yield from sort_cases(dtype)
    for dtype in DTYPES:
        for placement in PLACEMENTS:
            yield from attack_step_cases(dtype, placement)


def sample(case: Case, seed: int = 7) -> tuple:
    """The op's arguments for ``case`` (``unaligned``: dense, one element off alignment)."""
    from cprl_fast.ops import SPECS
    from cprl_fast.ops.spec import unaligned

    spec = SPECS[case.spec]
    layout = "channels_last" if case.placement == "channels_last" else "contiguous"
    args = spec.sample(case.shape, dtype=case.dtype, device="cpu", layout=layout, seed=seed,
                       **case.variant)  # fmt: skip
    args = unaligned(args) if case.placement == "unaligned" else args
    if case.special:  # in place, so the layout and alignment stay
        f = args[0]
        f.add_(0.025)  # no other channel's mean near 0 (they are 0.05 apart, one of them at 0)
        special = (float("nan"), float("inf"), -float("inf"), -0.0, 0.0)
        for n in range(f.shape[0]):
            for k, value in enumerate(special):
                f[n, (n + 2 * k) % f.shape[1]] = value
    return args


def _outputs(result) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def _assert_same(got, want, tol: dict) -> None:
    for g, w in zip(_outputs(got), _outputs(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype and g.stride() == w.stride()
        torch.testing.assert_close(g, w, equal_nan=True, **tol)


def check(case: Case) -> None:
    """The emulated CUDA kernels of ``case`` against the CPU kernels, within the op's
    tolerance (hard-rank masks exactly; attack_step's ``out=`` form as well)."""
    from cprl_fast.ops import SPECS

    spec = SPECS[case.spec]
    args = sample(case)
    tol = spec.tolerance(case.dtype, case.variant)
    forward, want = op(spec.name)(*args), spec.op(*args)
    _assert_same(forward, want, tol)
    if spec.name == "rank_mask" and not case.variant.get("soft"):
        assert torch.equal(forward[1], want[1])  # the same ranks, exactly
    if spec.name == "attack_step":
        out = torch.full_like(args[0], float("nan"))
        op("attack_step_out")(*args, out)
        torch.testing.assert_close(out, want, **tol)
    if spec.backward_op and not case.forward_only:
        bargs = spec.backward_sample(args, 13)
        expected = getattr(torch.ops.cprl_fast, spec.backward_op)(*bargs)
        _assert_same(op(spec.backward_op)(*bargs), expected, tol)
        if spec.name == "rank_mask":  # no gradient of the mask: the offset's from y alone
            bargs = (bargs[0], None, *bargs[2:])
            expected = torch.ops.cprl_fast.rank_mask_backward(*bargs)
            _assert_same(op("rank_mask_backward")(*bargs), expected, tol)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the CUDA kernels for the CPU emulator and compare every case with "
        "the CPU kernels."
    )
    parser.add_argument("build_dir", type=Path, help="folder for the rewritten sources and build")
    parser.add_argument("--sanitize", action="store_true",
                        help="build under AddressSanitizer and UBSan (run with the environment "
                        "of sanitized_environment())")  # fmt: skip
    args = parser.parse_args(argv)
    import cprl_fast  # noqa: F401  (the CPU kernels the cases compare with)

    build(args.build_dir, sanitize=args.sanitize)
    failed = []
    every = list(cases())
    for case in every:
        try:
            check(case)
        except AssertionError as e:
            failed.append(case)
            print(f"FAILED {case}: {(str(e).strip().splitlines() or [''])[0]}")
    print(f"{len(every) - len(failed)} of {len(every)} cases: the emulated CUDA kernels match "
          "the CPU kernels")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
