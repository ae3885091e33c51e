"""One registry of quality models: ``build(name, **options)``; names in one place.

Every model maps images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]`` in [0, 1] and may define
``training_loss(x, y) -> scalar`` (the default is the mean squared error of its scores), which
the trainer uses for every model but CPRL (whose PNS game is its own).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = fn
        return fn

    return wrap


def build(name: str, **options) -> nn.Module:
    """The model registered as ``name``, built with ``options``."""
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))}){hint}")
    return MODELS[name](**options)
