"""Moving host data to the device without making the host wait.

A copy from ordinary (pageable) CPU memory to a GPU returns only when the GPU has done all the
work queued before it: one host synchronisation per copy. From pinned memory, with
``non_blocking``, the copy is queued like a kernel and the host goes on (drawing the next random
numbers, decoding the next batch) while the GPU works. On the CPU both are plain copies.
"""

from __future__ import annotations

import torch


def pins(device: str | torch.device) -> bool:
    """Whether data bound for ``device`` should come in pinned memory (CUDA devices)."""
    return torch.device(device).type == "cuda"


def to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device``, copied without a host synchronisation: through pinned
    memory where :func:`pins` says so (the caching host allocator keeps the pinned block until
    the copy has run), else a plain ``.to()``. ``t`` itself is not changed."""
    if t.device.type == "cpu" and pins(device):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
