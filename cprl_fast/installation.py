"""What this installation holds and runs with: whether the extension ``cprl_fast._C`` holds the
CUDA kernels, the CPU kernels' huge-page hint, and :func:`environment` (every version and
setting a bug report needs; ``cprl-fast info`` without a checkpoint prints it). The package
re-exports all three; :func:`machine`, what a checkpoint and an audit record of the machine
that made them."""

from __future__ import annotations

import torch

from cprl_fast import _C
from cprl_fast.ops import get_backend
from cprl_fast.version import __version__


def has_cuda_kernels() -> bool:
    """Whether the extension was built with its CUDA kernels (``CPRL_FAST_CUDA``)."""
    return bool(torch.ops.cprl_fast.cuda_built())


def cpu_huge_pages() -> bool:
    """Whether the CPU kernels advise their large fresh outputs (8 MiB and up) for transparent
    huge pages: only with ``CPRL_FAST_HUGE_PAGES=1`` in the environment when the first kernel
    ran or this was first called (read once per process; docs/decisions.md says why it is off by
    default)."""
    return _C.cpu_huge_pages()


def environment() -> dict[str, str]:
    """What this installation runs with, for a bug report (``cprl-fast info`` without a
    checkpoint): the versions of cprl_fast, torch (and its CUDA), Python and Triton, the torch
    release the extension was built against, whether it holds the CUDA kernels, the GPU torch
    sees, the CPU and the instruction set of ATen's CPU kernels (:func:`machine`), the kernel
    backend, the huge-page hint and torch's CPU threads."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        triton = version("triton")  # read from its metadata: importing Triton takes seconds
    except PackageNotFoundError:
        triton = "not installed"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible"
    host = machine()
    return {
        "cprl_fast": __version__,
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        "python": platform.python_version(),
        "triton": triton,
        "extension": f"built for torch {_C.torch_version}, "
        + ("with" if has_cuda_kernels() else "without") + " the CUDA kernels",
        "GPU": gpu,
        "CPU": host["CPU"],
        "CPU kernels": host["CPU kernels"],
        "backend": get_backend(),
        "CPU huge pages": "advised" if cpu_huge_pages() else "off",
        "threads": host["threads"],
    }


def cpu_name() -> str:
    """The CPU's model name: the first ``model name`` line of ``/proc/cpuinfo`` (Linux), else
    what :mod:`platform` says (a generic name such as "Intel(R) Xeon(R) Processor" is all a
    virtual machine may say: :func:`machine` adds the instruction set)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(device: str | torch.device = "cpu") -> dict[str, str]:
    """The machine a model was trained or a number measured on, as a checkpoint's card and an
    audit record it: the CPU's name, the vector instruction set ATen's CPU kernels run with
    (``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2, ...), a cap set on oneDNN's
    (``ONEDNN_MAX_CPU_ISA``: torch has no getter for the set oneDNN's convolutions chose, which
    follows the CPU unless capped), torch's CPU threads and, for a CUDA ``device``, the GPU's
    name. CPU training repeats bit for bit only on the same kind of CPU: another one's
    convolution kernels round differently (docs/training.md)."""
    import os

    device = torch.device(device)
    out = {
        "CPU": cpu_name(),
        "CPU kernels": f"ATen {torch.backends.cpu.get_cpu_capability()}",
        "threads": str(torch.get_num_threads()),
    }
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if cap:
        out["oneDNN cap"] = cap
    if device.type == "cuda":
        out["GPU"] = torch.cuda.get_device_name(device)
    return out
