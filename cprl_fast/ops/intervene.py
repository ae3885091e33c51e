"""``intervene``: the masked intervention combine of CPRL (docs/maths.md §2).

Where it lives (``SPEC.files`` below lists the same):
  schema ``csrc/ops.cpp``; maths ``csrc/core/intervene.h``; shared set-up
  ``csrc/glue/intervene.h``; kernels ``csrc/cpu/intervene_cpu.cpp``,
  ``csrc/cuda/intervene_cuda.cu``, ``kernels/intervene.py`` (Triton); reference
  ``cprl_fast/reference/intervene.py``; tests ``tests/test_op_specs.py`` (shared, from ``SPEC``)
  and ``tests/test_intervene.py``; benchmark ``bench/cases.py`` (from ``SPEC``).

Schema (declared in ``csrc/ops.cpp``)::

    cprl_fast::intervene(Tensor f, Tensor t, Tensor mask, str mode) -> Tensor
    cprl_fast::intervene_backward(Tensor grad, Tensor f, Tensor t, Tensor mask, str mode)
        -> (Tensor grad_f, Tensor grad_t, Tensor grad_mask)

Autograd saves the inputs only; the backward recomputes the ReLU gate in the same pass that
writes ``grad_f`` and ``grad_t`` and reduces ``grad_mask``.
"""

from __future__ import annotations

import torch

from cprl_fast import reference
from cprl_fast.checks import (
    acc_dtype,
    check_intervene_args,
    check_output_grad,
    check_tensor,
    dense_format,
)
from cprl_fast.ops import _backend
from cprl_fast.ops.spec import BadCall, OpSpec, feature, in_layout, like

__all__ = ["SPEC", "intervene", "intervene_op"]


@torch.library.register_fake("cprl_fast::intervene")
def _intervene_fake(f, t, mask, mode):
    check_intervene_args(f, t, mask, mode)
    return torch.empty_like(f, memory_format=dense_format(f))


@torch.library.register_fake("cprl_fast::intervene_backward")
def _intervene_backward_fake(grad, f, t, mask, mode):
    check_intervene_args(f, t, mask, mode)
    check_output_grad(f, grad, "grad")
    fmt = dense_format(f)
    return (
        torch.empty_like(f, memory_format=fmt),
        torch.empty_like(f, memory_format=fmt),
        torch.empty_like(mask, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output, *, backend):
    f, t, mask, mode = inputs
    ctx.save_for_backward(f, t, mask)
    ctx.mode = mode
    ctx.backend = backend


def _backward(ctx, grad, *, backend):
    f, t, mask = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: a gradient that is differentiable again
        grads = torch.ops.cprl_fast.intervene_vjp(grad, f, t, mask, ctx.mode)
    else:
        grads = _backend.BACKENDS.get(backend).kernel("intervene_backward")(
            grad, f, t, mask, ctx.mode
        )
    return *grads, None


_backend.register_autograd("intervene", _setup_context, _backward)
# the backward under create_graph, native and Triton alike (csrc/ops.cpp declares it)
torch.library.impl("cprl_fast::intervene_vjp", "CompositeImplicitAutograd")(reference.intervene_vjp)


def intervene(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Intervened CA output: ``relu(c)`` (``mode="sf"``) or ``relu(s)`` (``mode="nc"``).

    ``c = t * (1 - M) + f * M`` keeps the masked-in (perceptual) part of ``f`` and replaces the
    rest by ``t``; ``s = t * M + f * (1 - M)`` keeps the masked-out part and replaces the
    perceptual part.

    Args:
        f: factual features ``[N, C, H, W]`` (or ``[N, C]``), float16/bfloat16/float32/float64.
        t: intervened features (the output of ``FC_phi`` or ``FC_xi``), same shape, dtype and
            device as ``f``.
        mask: ``M`` ``[N, C]``, any floating dtype (computed in float32, float64 for float64
            ``f``), e.g. the mask returned by :func:`rank_mask`.
        mode: ``"sf"`` (sufficiency, phi) or ``"nc"`` (necessity, xi).

    Returns:
        A tensor with the shape and dtype of ``f``; gradients flow to ``f``, ``t`` and ``mask``.

    Example::

        >>> f, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
        >>> out = intervene(f, t, torch.rand(2, 4), "sf")
        >>> out.shape
        torch.Size([2, 4, 3, 3])
    """
    check_tensor(f, "f")
    check_tensor(t, "t")
    flat = f.dim() == 2
    if flat:
        f, t = f[:, :, None, None], t[:, :, None, None]
    out = intervene_op(f, t, mask, mode)
    return out[:, :, 0, 0] if flat else out


def intervene_op(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The op itself on its schema's arguments (``f`` and ``t`` ``[N, C, H, W]``), served by the
    selected backend; as :func:`cprl_fast.ops.rank_mask_op`, every backend's op checks them."""
    return _backend.op_for("intervene", f.device)(f, t, mask, mode)


# -- the spec the shared tests and the benchmarks run -------------------------------------------


def _sample(shape, dtype=torch.float32, device="cpu", layout="contiguous", seed=0, mode="sf"):
    f = feature(shape, dtype=dtype, device=device, seed=seed, layout=layout)
    t = in_layout(like(f.contiguous(), seed + 1).relu(), layout)  # an FC output: non-negative
    g = torch.Generator().manual_seed(seed + 2)
    mask = torch.rand(shape[:2], generator=g, dtype=torch.float64).to(device, acc_dtype(dtype))
    return f, t, mask, mode


def _call(fn, args):
    return (fn(*args),)


def _backward_sample(args, seed):
    f, t, mask, mode = args
    return like(f.detach(), seed), f.detach(), t.detach(), mask.detach(), mode


SPEC = OpSpec(
    name="intervene",
    public=intervene,
    reference=reference.intervene,
    sample=_sample,
    call=_call,
    variants=({"mode": "sf"}, {"mode": "nc"}),
    shapes=((2, 5, 3, 7), (3, 1, 4, 4), (1, 2, 1, 1), (2, 64, 9, 5), (2, 300, 1, 2)),
    # the largest CA input of ResNet-50 at 320 px (batch 16), then its four at 224 px (batch 32)
    bench_shapes=((16, 256, 80, 80), (32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14),
                  (32, 2048, 7, 7)),
    small_bench_shapes=((2, 32, 8, 8), (2, 64, 4, 4)),
    passes=("fwd", "bwd", "fwdbwd"),
    # fwd reads f, t and writes out; bwd reads dy, f, t and writes df, dt
    bytes_moved={"fwd": 3, "bwd": 5, "fwdbwd": 8},
    grad_args=(0, 1, 2),
    backward_op="intervene_backward",
    backward_sample=_backward_sample,
    bench_variant={"mode": "sf"},
    bad_calls=(
        BadCall(
            "t of another shape",
            lambda a: (a[0], a[1][..., :1], *a[2:]),
            ValueError,
            r"t must have the shape of f",
        ),
        BadCall(
            "t of another dtype",
            lambda a: (a[0], a[1].double(), *a[2:]),
            TypeError,
            "t must have the dtype of f",
        ),
        BadCall(
            "4-d mask",
            lambda a: (*a[:2], a[2][:, :, None, None], a[3]),
            ValueError,
            r"mask must have shape \[N, C\]",
        ),
        BadCall(
            "integer mask",
            lambda a: (*a[:2], a[2].long(), a[3]),
            TypeError,
            "mask must be float16, bfloat16, float32 or float64",
        ),
        BadCall(
            "mode 'normal'", lambda a: (*a[:3], "normal"), ValueError, "mode must be 'sf' or 'nc'"
        ),
    ),
    files={
        "schema": "csrc/ops.cpp",
        "maths": "csrc/core/intervene.h",
        "set-up": "csrc/glue/intervene.h",
        "cpu": "csrc/cpu/intervene_cpu.cpp",
        "cuda": "csrc/cuda/intervene_cuda.cu",
        "triton": "kernels/intervene.py",
        "reference": "cprl_fast/reference/intervene.py",
        "tests": "tests/test_intervene.py",
        "benchmark": "bench/cases.py",
    },
)
