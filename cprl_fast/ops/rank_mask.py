"""``rank_mask``: the CA activation of CPRL (docs/maths.md §1) as a custom op.

Where it lives (``SPEC.files`` below lists the same):
  schema ``csrc/ops.cpp``; maths ``csrc/core/rank_mask.h``; shared set-up
  ``csrc/glue/rank_mask.h``; kernels ``csrc/cpu/rank_mask_cpu.cpp``,
  ``csrc/cuda/rank_mask_cuda.cu``, ``kernels/rank_mask.py`` (Triton); reference
  ``cprl_fast/reference/rank_mask.py``; tests ``tests/test_op_specs.py`` (shared, from ``SPEC``)
  and ``tests/test_rank_mask.py`` (its own behaviour); benchmark ``bench/cases.py`` (from ``SPEC``).

Schema::

    cprl_fast::rank_mask(Tensor f, Tensor b, float temperature, bool soft, float tau)
        -> (Tensor y, Tensor mask)
    cprl_fast::ca_activation(Tensor f, Tensor b, float temperature, bool soft, float tau)
        -> Tensor y          # rank_mask's y alone (autograd.cpp; no kernels of its own)
    cprl_fast::rank_mask_backward(Tensor grad_y, Tensor? grad_mask, Tensor f, Tensor mask,
        Tensor b, float temperature, bool soft, float tau) -> (Tensor grad_f, Tensor grad_b)

Autograd saves ``f``, ``mask`` and ``b`` (never ``f * mask``), and the backward is its own op,
so ``opcheck`` and ``torch.compile`` see it too.
"""

from __future__ import annotations

import torch

from cprl_fast import reference
from cprl_fast.checks import (
    acc_dtype,
    check_optional_mask_grad,
    check_output_grad,
    check_rank_mask_args,
    check_tensor,
    dense_format,
)
from cprl_fast.ops import _backend
from cprl_fast.ops.spec import TOLERANCES, BadCall, OpSpec, feature, like
from cprl_fast.reference.rank_mask import DEFAULT_TAU

__all__ = ["DEFAULT_TAU", "SPEC", "ca_activation_op", "rank_mask", "rank_mask_op"]


@torch.library.register_fake("cprl_fast::rank_mask")
def _rank_mask_fake(f, b, temperature, soft, tau):
    check_rank_mask_args(f, b, temperature, soft, tau)
    y = torch.empty_like(f, memory_format=dense_format(f))
    mask = f.new_empty(f.shape[:2], dtype=acc_dtype(f.dtype))
    return y, mask


@torch.library.register_fake("cprl_fast::ca_activation")
def _ca_activation_fake(f, b, temperature, soft, tau):
    check_rank_mask_args(f, b, temperature, soft, tau)
    return torch.empty_like(f, memory_format=dense_format(f))


@torch.library.register_fake("cprl_fast::rank_mask_backward")
def _rank_mask_backward_fake(grad_y, grad_mask, f, mask, b, temperature, soft, tau):
    check_rank_mask_args(f, b, temperature, soft, tau)
    check_output_grad(f, grad_y, "grad_y")
    check_optional_mask_grad(f, grad_mask)
    return torch.empty_like(f, memory_format=dense_format(f)), torch.empty_like(b)


def _setup_context(ctx, inputs, output, *, backend):
    f, b, temperature, soft, tau = inputs
    _, mask = output
    ctx.save_for_backward(f, mask, b)
    ctx.args = (temperature, soft, tau)
    ctx.backend = backend


def _backward(ctx, grad_y, grad_mask, *, backend):
    f, mask, b = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: a gradient that is differentiable again
        grad_f, grad_b = torch.ops.cprl_fast.rank_mask_vjp(grad_y, grad_mask, f, b, *ctx.args)
    else:
        grad_f, grad_b = _backend.BACKENDS.get(backend).kernel("rank_mask_backward")(
            grad_y, grad_mask, f, mask, b, *ctx.args
        )
    return grad_f, grad_b, None, None, None


_backend.register_autograd("rank_mask", _setup_context, _backward)
# the backward under create_graph, native and Triton alike (csrc/ops.cpp declares it)
torch.library.impl("cprl_fast::rank_mask_vjp", "CompositeImplicitAutograd")(reference.rank_mask_vjp)


def rank_mask(
    f: torch.Tensor,
    b: torch.Tensor | float,
    *,
    temperature: float = 1.0,
    rank: str = "hard",
    tau: float | None = None,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Channel-activation mask: ``relu(f * M)`` with ``M = sigmoid((rank(s) - C/2 + b*C) / T)``.

    Args:
        f: pre-activation features ``[N, C, H, W]`` (or ``[N, C]``, read as ``H = W = 1``),
            float16/bfloat16/float32/float64, any strides. ``N >= 0``; ``C, H, W >= 1``.
        b: the learnable offset, a one-element floating tensor on ``f``'s device (any floating
            dtype: the op computes in float32, float64 for float64 ``f``), or a Python float.
            ``b = 0.5`` keeps every channel; ``b = 0.4`` switches off the ~10% lowest-ranked.
        temperature: ``T > 0`` of the mask's sigmoid (the paper: 1).
        rank: ``"hard"`` (stable ascending rank of the channel means ``s = mean_hw f``, NaN
            last; piecewise constant, so no gradient flows through it) or ``"soft"``
            (``sum_{j != c} sigmoid((s_c - s_j) / tau)``, differentiable through ``s``).
        tau: soft-rank temperature in units of ``s``; ``None`` means :data:`DEFAULT_TAU`.
            Only for ``rank="soft"``.
        return_mask: also return ``M``.

    Returns:
        ``y`` with the shape and dtype of ``f`` (channels_last if ``f`` is), and with
        ``return_mask`` also ``M`` ``[N, C]`` (float64 for float64 ``f``, else float32).
        Gradients flow to ``f`` and ``b`` from both.

    Example::

        >>> f = torch.randn(2, 8, 5, 5, requires_grad=True)
        >>> b = torch.tensor(0.4, requires_grad=True)
        >>> y, m = rank_mask(f, b, return_mask=True)
        >>> y.shape, m.shape
        (torch.Size([2, 8, 5, 5]), torch.Size([2, 8]))
    """
    check_tensor(f, "f")
    if rank not in ("hard", "soft"):
        raise ValueError(f"rank must be 'hard' or 'soft', got {rank!r}")
    if rank == "hard" and tau is not None:
        raise ValueError("tau applies to rank='soft' only; leave it None for rank='hard'")
    soft = rank == "soft"
    tau_value = DEFAULT_TAU if tau is None else float(tau)
    if not isinstance(b, torch.Tensor):  # a fill on the device, no host-to-device copy
        b = f.new_full((), float(b), dtype=acc_dtype(f.dtype))
    flat = f.dim() == 2
    y, mask = rank_mask_op(f[:, :, None, None] if flat else f, b, float(temperature), soft,
                           tau_value)  # fmt: skip
    if flat:
        y = y[:, :, 0, 0]
    return (y, mask) if return_mask else y


def rank_mask_op(
    f: torch.Tensor, b: torch.Tensor, temperature: float, soft: bool, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op itself on its schema's arguments (``f`` ``[N, C, H, W]``, ``b`` a one-element
    tensor, ``tau`` a float even for the hard rank), served by the selected backend; returns
    ``(y, mask)``. What :func:`rank_mask` calls after normalising its arguments, and what
    :class:`cprl_fast.nn.CPRLActivation` calls on every forward with the arguments it checked
    once. Every backend's op checks the tensors itself (``csrc/checks.h``, and the Triton ops
    with :mod:`cprl_fast.checks`, word for word), so nothing is checked twice here."""
    return _backend.op_for("rank_mask", f.device)(f, b, temperature, soft, tau)


def ca_activation_op(
    f: torch.Tensor, b: torch.Tensor, temperature: float, soft: bool, tau: float
) -> torch.Tensor:
    """:func:`rank_mask_op`'s ``y`` alone, from ``cprl_fast::ca_activation`` (the same kernels
    and gradients; the mask is saved for the backward, not returned), which costs less host
    time per call than taking ``y`` from the pair: what :class:`cprl_fast.nn.CPRLActivation`
    calls in its normal mode. The Triton backend has no such op and returns ``rank_mask``'s
    ``y``."""
    return _backend.op_for("ca_activation", f.device)(f, b, temperature, soft, tau)


# -- the spec the shared tests and the benchmarks run -------------------------------------------


def _sample(shape, dtype=torch.float32, device="cpu", layout="contiguous", seed=0, soft=False):
    f = feature(shape, dtype=dtype, device=device, seed=seed, layout=layout)
    b = torch.tensor(0.35, dtype=acc_dtype(dtype), device=device)
    return f, b, 0.8, soft, 0.3


def _call(fn, args):
    f, b, temperature, soft, tau = args
    rank, tau = ("soft", tau) if soft else ("hard", None)
    return fn(f, b, temperature=temperature, rank=rank, tau=tau, return_mask=True)


def _backward_sample(args, seed):
    f, b, temperature, soft, tau = args
    mask = torch.rand(f.shape[:2], generator=torch.Generator().manual_seed(seed)).to(f.device)
    return like(f, seed), mask, f.detach(), mask, b.detach(), temperature, soft, tau


def _tolerance(dtype, variant):
    # the soft rank sums C - 1 sigmoids in float32: allow for the order of that sum
    if variant.get("soft") and dtype == torch.float32:
        return {"rtol": 1e-4, "atol": 5e-5}
    return TOLERANCES[dtype]


SPEC = OpSpec(
    name="rank_mask",
    public=rank_mask,
    reference=reference.rank_mask,
    sample=_sample,
    call=_call,
    variants=({"soft": False}, {"soft": True}),
    shapes=((2, 5, 3, 7), (3, 1, 4, 4), (1, 2, 1, 1), (4, 33, 1, 1), (2, 64, 9, 5), (2, 300, 2, 3)),
    # the largest CA input of ResNet-50 at 320 px (batch 16), then its four at 224 px (batch 32)
    bench_shapes=((16, 256, 80, 80), (32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14),
                  (32, 2048, 7, 7)),
    small_bench_shapes=((2, 32, 8, 8), (2, 64, 4, 4)),
    passes=("fwd", "bwd", "fwdbwd"),
    # fwd reads f, writes y; bwd reads f and dy, writes df ([N, C] vectors are negligible)
    bytes_moved={"fwd": 2, "bwd": 3, "fwdbwd": 5},
    grad_args=(0, 1),
    backward_op="rank_mask_backward",
    backward_sample=_backward_sample,
    tolerance=_tolerance,
    bad_calls=(
        BadCall(
            "3-d f", lambda a: (a[0][0], *a[1:]), ValueError, r"f must have shape \[N, C, H, W\]"
        ),
        BadCall("int f", lambda a: (a[0].int(), *a[1:]), TypeError, "f must be float16, bfloat16"),
        BadCall(
            "two-element b",
            lambda a: (a[0], a[1].repeat(2), *a[2:]),
            ValueError,
            "b must be a tensor with one element",
        ),
        BadCall(
            "zero temperature",
            lambda a: (*a[:2], 0.0, *a[3:]),
            ValueError,
            "temperature must be a positive finite number",
        ),
        BadCall(
            "infinite temperature",
            lambda a: (*a[:2], float("inf"), *a[3:]),
            ValueError,
            "temperature must be a positive finite number",
        ),
        BadCall(
            "zero tau",
            lambda a: (*a[:3], True, 0.0),
            ValueError,
            "tau must be a positive finite number",
        ),
    ),
    files={
        "schema": "csrc/ops.cpp",
        "maths": "csrc/core/rank_mask.h",
        "set-up": "csrc/glue/rank_mask.h",
        "cpu": "csrc/cpu/rank_mask_cpu.cpp",
        "cuda": "csrc/cuda/rank_mask_cuda.cu",
        "triton": "kernels/rank_mask.py",
        "reference": "cprl_fast/reference/rank_mask.py",
        "tests": "tests/test_rank_mask.py",
        "benchmark": "bench/cases.py",
    },
)
