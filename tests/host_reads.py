"""A recorder of tensor-to-Python conversions: on a GPU each one waits for the device, so the
paths that must not synchronise per iteration (a training step, an attack) are checked on the
CPU by counting them."""

from __future__ import annotations

import torch


class HostReads(torch.overrides.TorchFunctionMode):
    """Records every tensor-to-Python conversion (``reads``: the names, in order), except on the
    tensors in ``exempt`` (for example the optimisers' step counters: CPU tensors by design)."""

    CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, exempt: set[int] | None = None):
        super().__init__()
        self.exempt, self.reads = exempt or set(), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.CONVERSIONS and not (args and id(args[0]) in self.exempt):
            self.reads.append(name)
        return func(*args, **(kwargs or {}))
