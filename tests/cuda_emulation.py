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
"""

from __future__ import annotations

import re
import shutil
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
    """The op schemas of ``csrc/ops.cpp`` that have kernels (not ``cuda_built``)."""
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


def build(build_dir: Path, verbose: bool = False) -> None:
    """Compiles the rewritten sources into ``build_dir`` and loads them: afterwards
    ``torch.ops.cprl_fast_emu.<op>`` runs the CUDA kernels of ``<op>`` on CPU tensors."""
    from torch.utils import cpp_extension

    sources = _write_sources(build_dir / "src")
    out = build_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name="cprl_fast_cuda_emu",
        sources=[str(s) for s in sources],
        extra_include_paths=[str(EMU / "include")],
        extra_cflags=["-O1", "-fvisibility=hidden"],
        build_directory=str(out),
        is_python_module=False,
        verbose=verbose,
    )


def op(name: str) -> torch._ops.OpOverloadPacket:
    """The emulated CUDA kernel of op ``name``."""
    return getattr(getattr(torch.ops, NAMESPACE), name)
