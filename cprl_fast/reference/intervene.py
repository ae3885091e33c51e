"""Reference of :func:`cprl_fast.ops.intervene`, written from docs/maths.md §2."""

from __future__ import annotations

import torch

from cprl_fast.checks import acc_dtype


def intervene(f: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """``relu(t*(1-M) + f*M)`` for ``"sf"``, ``relu(t*M + f*(1-M))`` for ``"nc"``."""
    acc = acc_dtype(f.dtype)
    m = mask.to(acc)
    m = m if f.dim() == 2 else m[:, :, None, None]
    fa, ta = f.to(acc), t.to(acc)
    if mode == "sf":
        c = ta * (1 - m) + fa * m
    elif mode == "nc":
        c = ta * m + fa * (1 - m)
    else:
        raise ValueError(f"mode must be 'sf' or 'nc', got {mode!r}")
    return torch.relu(c).to(f.dtype)
