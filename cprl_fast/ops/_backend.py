"""Which kernel implementation serves an op call.

Backends:
  ``native``: the C++ (CPU) and CUDA kernels of the ``cprl_fast._C`` extension, registered
      for the CPU and CUDA dispatch keys of ``torch.ops.cprl_fast``.
  ``triton``: the Triton kernels of ``cprl_fast.kernels`` (CUDA tensors only), wrapped with
      ``torch.library.triton_op``.
  ``auto`` (default): ``native`` on the CPU; on CUDA tensors the backend measured faster
      (see ``bench/results/``), which is :data:`CUDA_DEFAULT`, falling back to the other when
      one is not available (no CUDA kernels built, or Triton not installed).

Choose with :func:`set_backend` or the environment variable ``CPRL_FAST_BACKEND``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

BACKENDS = ("auto", "native", "triton")
#: The CUDA backend ``auto`` prefers.
CUDA_DEFAULT = "native"

_state = {"backend": os.environ.get("CPRL_FAST_BACKEND", "auto").strip().lower() or "auto"}
if _state["backend"] not in BACKENDS:
    raise ValueError(
        f"CPRL_FAST_BACKEND must be one of {', '.join(BACKENDS)}, got {_state['backend']!r}"
    )


def set_backend(name: str) -> None:
    """Select the kernel backend for CUDA tensors: ``"auto"``, ``"native"`` or ``"triton"``."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    _state["backend"] = name


def get_backend() -> str:
    """The backend selected by :func:`set_backend` or ``CPRL_FAST_BACKEND``."""
    return _state["backend"]


def native_cuda_available() -> bool:
    return bool(torch.ops.cprl_fast.cuda_built())


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(device: torch.device) -> str:
    """The concrete backend (``native`` or ``triton``) that serves tensors on ``device``."""
    choice = _state["backend"]
    if device.type != "cuda":
        if choice == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
            return "triton"
        return "native"
    if choice == "auto":
        order = (CUDA_DEFAULT, "triton" if CUDA_DEFAULT == "native" else "native")
        for candidate in order:
            if native_cuda_available() if candidate == "native" else triton_available():
                return candidate
        raise RuntimeError(
            "no CUDA backend for cprl_fast: the extension was built without CUDA kernels "
            "and Triton is not installed"
        )
    if choice == "native" and not native_cuda_available():
        raise RuntimeError(
            "backend 'native' was chosen but cprl_fast was built without CUDA kernels; "
            "rebuild with CPRL_FAST_CUDA=1 or use set_backend('triton')"
        )
    if choice == "triton" and not triton_available():
        raise RuntimeError("backend 'triton' was chosen but triton is not installed")
    return choice


def op(name: str, like: torch.Tensor) -> Callable:
    """The callable implementing op ``name`` for tensors like ``like``."""
    if resolve(like.device) == "triton":
        from cprl_fast import kernels

        return kernels.OPS[name]
    return getattr(torch.ops.cprl_fast, name).default
