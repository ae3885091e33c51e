"""Helpers shared by the op tests: inputs in every layout, tolerances per dtype."""

from __future__ import annotations

import zlib

import torch

LAYOUTS = ("contiguous", "channels_last", "strided", "permuted")

TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}


def seed_of(*parts: object) -> int:
    """A seed that differs between test cases and is the same on every run."""
    return zlib.crc32(repr(parts).encode()) % 100_000


def tol(dtype: torch.dtype) -> dict:
    return TOLERANCES[dtype]


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as the 4-D tensor ``x``, stored in ``layout``."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider buffer: not dense
        n, c, h, w = x.shape
        wide = torch.zeros(n, c, h, 2 * w, dtype=x.dtype, device=x.device)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "permuted":  # stored as [N, H, C, W]: dense but neither layout
        return x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    raise ValueError(layout)


def feature(
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    layout: str = "contiguous",
    gap: float = 0.05,
) -> torch.Tensor:
    """Random features whose channel means are at least ``gap`` apart per sample, so that the
    hard rank does not depend on the order of a floating-point sum (ties are tested apart)."""
    g = torch.Generator().manual_seed(seed)
    n, c = shape[0], shape[1]
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    spatial = tuple(range(2, x.dim()))
    if spatial:
        x = x - x.mean(dim=spatial, keepdim=True)
    offsets = torch.stack([torch.randperm(c, generator=g) for _ in range(n)]).to(torch.float64)
    offsets = (offsets - c / 2) * gap
    x = x + offsets.reshape(n, c, *([1] * len(spatial)))
    x = x.to(dtype=dtype, device=device)
    return in_layout(x, layout) if x.dim() == 4 else x


def like(x: torch.Tensor, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A random tensor with the shape, dtype, device and layout of ``x``."""
    g = torch.Generator().manual_seed(seed)
    r = (torch.randn(x.shape, generator=g, dtype=torch.float64) * scale).to(x.dtype).to(x.device)
    return torch.empty_like(x).copy_(r)


def grads(fn, inputs: list[torch.Tensor], grad_outputs):
    """Gradients of ``fn(*inputs)`` w.r.t. inputs, for the given output gradients."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    torch.autograd.backward(outs, grad_outputs)
    return out, [leaf.grad for leaf in leaves]
