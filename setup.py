"""Build of the cprl_fast._C extension (C++ CPU kernels, plus CUDA kernels when possible).

Environment switches:
  CPRL_FAST_CUDA=auto|0|1   auto (default): build the CUDA kernels when torch has CUDA and a CUDA
                            compiler is found; 0: never; 1: always (fails if impossible).
  CUDA_HOME                 the CUDA toolkit; when unset it is found from the real `nvcc`
                            (following a wrapper script that execs another nvcc).
  TORCH_CUDA_ARCH_LIST      GPU architectures; when unset and no GPU is visible, "9.0+PTX" (Hopper
                            code, and PTX that other cards compile when they load it).
  CPRL_FAST_MARCH=native    -march of the C++ kernels ("" for the compiler's default target).
  CPRL_FAST_DEBUG=1         -O0 -g instead of -O3.
  CPRL_FAST_PTXAS_VERBOSE=1 ptxas prints each CUDA kernel's registers and spills (bench/aot_check).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()


def _real_nvcc() -> Path | None:
    """The nvcc binary behind the one on PATH, following a shell wrapper that execs another."""
    found = shutil.which("nvcc")
    if found is None:
        return None
    path = Path(found).resolve()
    for _ in range(4):
        try:
            head = path.read_bytes()[:4096]
        except OSError:
            return path
        if not head.startswith(b"#!"):
            return path
        match = re.search(rb"(/[^\s\"']+/bin/nvcc)\b", head)
        if match is None:
            return path
        path = Path(match.group(1).decode()).resolve()
    return path


def _resolve_cuda_home() -> None:
    """Set CUDA_HOME before torch.utils.cpp_extension reads it (it guesses from PATH wrongly)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = _real_nvcc()
    if nvcc is not None and (nvcc.parent.parent / "include" / "cuda_runtime.h").exists():
        os.environ["CUDA_HOME"] = str(nvcc.parent.parent)


_resolve_cuda_home()

try:
    import torch
except ImportError:  # pip's isolated build environment: no torch there, by design
    sys.exit(
        "cprl_fast compiles against the torch it will run with, so torch must be installed "
        "first and the build must see it: pip install torch, then "
        "pip install --no-build-isolation .  (an isolated build would download a second torch "
        "and the CUDA stack, several GB, and build against a torch you do not run)"
    )
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)


def _want_cuda() -> bool:
    switch = os.environ.get("CPRL_FAST_CUDA", "auto").strip().lower()
    if switch not in {"auto", "0", "1"}:
        sys.exit(f"CPRL_FAST_CUDA must be auto, 0 or 1, got {switch!r}")
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if switch == "1" and not possible:
        sys.exit(
            "CPRL_FAST_CUDA=1 but the CUDA kernels cannot be built: "
            f"torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r}"
        )
    return possible and switch != "0"


def _nvidia_wheel_includes() -> list[str]:
    """Headers torch's CUDA code includes (cusparse.h, ...) that ship in the nvidia pip wheels."""
    dirs: list[str] = []
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            dirs += sorted(str(p) for p in base.glob("cu*/include") if p.is_dir())
            dirs += sorted(str(p) for p in base.glob("*/include") if p.is_dir())
    return list(dict.fromkeys(dirs))


def _march_flags() -> list[str]:
    """-march for the CPU kernels: CPRL_FAST_MARCH (default "native": the extension is built on
    the machine that runs it, as torch.compile's C++ code is). Set CPRL_FAST_MARCH="" (or e.g.
    x86-64-v3) when building a wheel for other machines."""
    march = os.environ.get("CPRL_FAST_MARCH", "native").strip()
    return [f"-march={march}"] if march else []


def _extension():
    debug = os.environ.get("CPRL_FAST_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # at::parallel_for is an OpenMP pragma in ATen's headers: without -fopenmp it runs serially.
    # The OpenMP runtime is the libgomp.so.1 torch has already loaded (same soname).
    cxx = [*opt, "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off", *_march_flags()]
    link = ["-fopenmp"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    include_dirs = [str(ROOT / "csrc")]
    if not _want_cuda():
        return CppExtension(
            "cprl_fast._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # no GPU to read the architecture from: Hopper code, plus PTX that other cards JIT
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0+PTX"
    nvcc = [*opt, "--expt-relaxed-constexpr", "-lineinfo"]
    if os.environ.get("CPRL_FAST_PTXAS_VERBOSE") == "1":  # registers and spills per kernel
        nvcc.append("-Xptxas=-v")
    return CUDAExtension(
        "cprl_fast._C",
        sources + sorted(glob.glob("csrc/cuda/*.cu")),
        include_dirs=include_dirs + _nvidia_wheel_includes(),
        extra_link_args=link,
        extra_compile_args={
            "cxx": [*cxx, "-DCPRL_FAST_WITH_CUDA"],
            "nvcc": [*nvcc, "-DCPRL_FAST_WITH_CUDA"],
        },
    )


setup(
    ext_modules=[_extension()],
    cmdclass={
        "build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    },
)
