"""One registry of quality models: ``build(name, **options)``; names in one place.

Every model maps images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]`` in [0, 1]. Each is
registered with the training objective it uses by default (``MODELS.info(name)["objective"]``,
a name of :data:`cprl_fast.train.objectives.OBJECTIVES`) and a one-line description.
"""

from __future__ import annotations

import inspect

from torch import nn

from cprl_fast.registry import Registry

MODELS = Registry("model")
register = MODELS.register


def build(name: str, **options) -> nn.Module:
    """The model registered as ``name``, built with ``options`` (its factory's arguments)."""
    factory = MODELS.get(name)
    known = option_names(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(unknown)} (its options: {', '.join(known)})"
        )
    return factory(**options)


def option_names(name: str) -> list[str]:
    """The options (factory arguments) of model ``name``."""
    return list(inspect.signature(MODELS.get(name)).parameters)


def option_defaults(name: str) -> dict:
    """The default of every option of model ``name`` that has one."""
    params = inspect.signature(MODELS.get(name)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def default_objective(name: str) -> str:
    return MODELS.info(name)["objective"]
