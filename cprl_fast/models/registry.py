"""One registry of quality models: ``build(name, **options)``; names in one place.

Every model maps images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]`` in [0, 1] and may define
``training_loss(x, y) -> scalar`` (the default is the mean squared error of its scores), which
the trainer uses for every model but CPRL (whose PNS game is its own).
"""

from __future__ import annotations

from torch import nn

from cprl_fast.registry import Registry

MODELS = Registry("model")
register = MODELS.register


def build(name: str, **options) -> nn.Module:
    """The model registered as ``name``, built with ``options``."""
    return MODELS.get(name)(**options)
