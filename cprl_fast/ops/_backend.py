"""The backend table: which kernels serve an op call, chosen at forward and saved for backward.

Backends (entries of :data:`BACKENDS`):
  ``native``: the C++ (CPU) and CUDA kernels of the ``cprl_fast._C`` extension, registered
      for the CPU and CUDA dispatch keys of ``torch.ops.cprl_fast.<op>``. ``ca_activation``
      is served by ``cprl_fast._C.ca_activation``, the same op called without torch.ops' boxed
      path (``csrc/python_module.cpp``), which a CA layer calls on every forward.
  ``triton``: the Triton kernels of ``cprl_fast.kernels`` (CUDA tensors; CPU tensors under
      ``TRITON_INTERPRET=1``), registered as ``torch.ops.cprl_fast.<op>_triton`` with the
      native op's schema.

The choice (:func:`set_backend` or the environment variable ``CPRL_FAST_BACKEND``): ``auto``
(default) is ``native`` on the CPU and, on CUDA tensors, :data:`CUDA_DEFAULT` falling back to
the other when one is not available; ``native`` or ``triton`` force one.

Autograd: the native ops have theirs in C++ (``csrc/autograd.cpp``: no Python on a call's way
through autograd); the Triton ops get theirs from Python (:func:`register_autograd`, read by
:func:`load_triton_kernels`), with the same saved tensors and the same backward op schema. Either
way the backward runs the backward op of the backend that ran the forward, except under
``create_graph`` (grad mode on in the backward: double backpropagation, ``torch.func``), where
it calls ``cprl_fast::<op>_vjp``, the reference's gradient in differentiable ops
(:func:`cprl_fast.reference.rank_mask_vjp`), so that the gradient has a gradient of its own.
Everything the dispatch decision reads is a Python constant after import, so
``torch.compile(fullgraph=True)`` traces it (no op call that returns a non-tensor).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cprl_fast import _C
from cprl_fast.registry import Registry

#: The CUDA backend ``auto`` prefers: native was as fast or faster in 35 of 40 benchmark rows on
#: an H100 (bench/results/h100-2026-11-26/README.md).
CUDA_DEFAULT = "native"
CHOICES = ("auto", "native", "triton")


@dataclass(frozen=True)
class Backend:
    """One kernel implementation of every op."""

    name: str
    #: whether it can serve tensors on a device of this type ("cpu", "cuda")
    serves: Callable[[str], bool]
    #: the op overload implementing op ``name`` (e.g. "rank_mask_backward"); for
    #: ``ca_activation`` on a backend without that op, a function of the same arguments
    kernel: Callable[[str], Callable]
    why_not: str  #: what to do when it is chosen but cannot serve


BACKENDS = Registry("backend")

#: Whether the extension was built with its CUDA kernels (a constant: read once).
NATIVE_CUDA = bool(torch.ops.cprl_fast.cuda_built())
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _native_kernel(name: str) -> Callable:
    if name == "ca_activation":  # the same op without torch.ops' boxed call path
        return _C.ca_activation
    return getattr(torch.ops.cprl_fast, name).default


@torch.compiler.substitute_in_graph(_C.ca_activation)
def _ca_activation_traced(f, b, temperature, soft, tau):
    """What torch.compile traces for ``_C.ca_activation`` (a C function it cannot see into):
    the op itself, through torch.ops."""
    return torch.ops.cprl_fast.ca_activation.default(f, b, temperature, soft, tau)


#: The Triton ops by name, filled once by :func:`load_triton_kernels`.
_TRITON_OPS: dict[str, torch._ops.OpOverload] = {}


def triton_usable() -> bool:
    """Whether the Triton backend can run here: Triton installed and a GPU visible, or the
    interpreter on (``TRITON_INTERPRET=1``)."""
    return HAS_TRITON and (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available())


def load_triton_kernels() -> dict[str, torch._ops.OpOverload]:
    """Imports the Triton kernels and registers their autograd, once. ``cprl_fast.ops`` calls it
    on import wherever :func:`triton_usable`, so that the lookup of a Triton op inside a function
    torch.compile traces is a plain dictionary read: loading inside the trace (registering
    autograd) fails under ``fullgraph=True`` (found on the first GPU run)."""
    if not _TRITON_OPS:
        from cprl_fast import kernels

        for op, (setup, backward) in _AUTOGRAD.items():
            torch.library.register_autograd(
                kernels.OPS[op],
                functools.partial(backward, backend="triton"),
                setup_context=functools.partial(setup, backend="triton"),
            )
        _TRITON_OPS.update(kernels.OPS)
    return _TRITON_OPS


def _triton_kernel(name: str) -> Callable:
    if name == "ca_activation":  # no single-output Triton op: rank_mask's y
        return _triton_ca_activation
    return _TRITON_OPS[name] if _TRITON_OPS else load_triton_kernels()[name]


def _triton_ca_activation(f, b, temperature, soft, tau):
    """``ca_activation`` on the Triton backend: ``rank_mask``'s ``y`` (the native backend has an
    op of its own for it, ``csrc/autograd.cpp``, which saves host time per call)."""
    return _triton_kernel("rank_mask")(f, b, temperature, soft, tau)[0]


BACKENDS.register("native")(
    Backend(
        "native",
        serves=lambda device_type: device_type == "cpu" or (device_type == "cuda" and NATIVE_CUDA),
        kernel=_native_kernel,
        why_not="cprl_fast was built without CUDA kernels; rebuild with CPRL_FAST_CUDA=1 or "
        "use set_backend('triton')",
    )
)
BACKENDS.register("triton")(
    Backend(
        "triton",
        serves=lambda device_type: (
            HAS_TRITON and (device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
        ),
        kernel=_triton_kernel,
        why_not="triton is not installed (or, on the CPU, TRITON_INTERPRET=1 is not set)",
    )
)


def _initial_choice() -> str:
    choice = os.environ.get("CPRL_FAST_BACKEND", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"CPRL_FAST_BACKEND must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


_state = {"backend": _initial_choice()}

# (op, device) -> the overload :func:`kernel` returns for them under the current choice; emptied
# by set_backend. The forced Triton choice is never remembered: on the CPU it depends on
# TRITON_INTERPRET, which a caller may change at any time. Keyed by the torch.device itself:
# reading ``device.type`` costs more host time than the whole lookup.
_ROUTES: dict[tuple[str, torch.device], Callable] = {}


def set_backend(name: str) -> None:
    """Select the kernel backend: ``"auto"``, ``"native"`` or ``"triton"``."""
    if name not in CHOICES:
        raise ValueError(f"backend must be one of {', '.join(CHOICES)}, got {name!r}")
    _state["backend"] = name
    _ROUTES.clear()


def get_backend() -> str:
    """The backend selected by :func:`set_backend` or ``CPRL_FAST_BACKEND``."""
    return _state["backend"]


def resolve(device: torch.device) -> Backend:
    """The backend that serves tensors on ``device`` under the current choice."""
    choice = _state["backend"]
    if choice == "auto":
        if device.type != "cuda":
            return BACKENDS.get("native")
        order = (CUDA_DEFAULT, "triton" if CUDA_DEFAULT == "native" else "native")
        for name in order:
            if BACKENDS.get(name).serves("cuda"):
                return BACKENDS.get(name)
        raise RuntimeError(
            "no CUDA backend for cprl_fast: the extension was built without CUDA kernels "
            "and Triton is not installed"
        )
    backend = BACKENDS.get(choice)
    if not backend.serves(device.type):
        if device.type == "cpu":  # the native CPU kernels serve any choice on the CPU
            return BACKENDS.get("native")
        raise RuntimeError(f"backend {choice!r} was chosen but {backend.why_not}")
    return backend


def kernel(op: str, device: torch.device) -> tuple[Backend, Callable]:
    """(backend, op overload) serving op ``op`` for tensors on ``device``."""
    backend = resolve(device)
    return backend, backend.kernel(op)


def op_for(op: str, device: torch.device) -> Callable:
    """The op overload serving op ``op`` for tensors on ``device``, as :func:`kernel` chooses it,
    remembered: what a layer calls on every forward (a dictionary read instead of resolving the
    backend again; bench/host_overhead.py measures the host time per call)."""
    found = _ROUTES.get((op, device))
    if found is None:
        found = kernel(op, device)[1]
        if _state["backend"] != "triton":
            _ROUTES[(op, device)] = found
    return found


# op name -> (setup_context(ctx, inputs, output, *, backend), backward(ctx, *grads, backend))
_AUTOGRAD: dict[str, tuple[Callable, Callable]] = {}


def register_autograd(op: str, setup_context: Callable, backward: Callable) -> None:
    """Records the Python autograd of op ``op`` for the Triton backend's forward op (registered
    when the Triton kernels load): both functions receive ``backend="triton"``, and the backward
    calls the Triton backward op. The native op's autograd is ``csrc/autograd.cpp``'s."""
    _AUTOGRAD[op] = (setup_context, backward)
