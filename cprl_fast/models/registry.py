"""One registry of quality models: ``build(name, **options)``; names in one place.

Every model maps images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]`` in [0, 1]. Each is
registered with the training objective it uses by default (``MODELS.info(name)["objective"]``,
a name of :data:`cprl_fast.train.objectives.OBJECTIVES`) and a one-line description.
"""

from __future__ import annotations

import inspect
import math

from torch import nn

from cprl_fast.models.inputs import check_input_norm
from cprl_fast.registry import Registry

MODELS = Registry("model")
register = MODELS.register


#: Integer model options and their documented bounds (inclusive): a model card or a config
#: outside them is refused before anything is built.
INT_OPTION_LIMITS = {"units": (1, 2048), "bins": (2, 1000), "scnn_steps": (0, 1_000_000),
                     "patch": (16, 4096)}  # fmt: skip
#: Integer options whose ``None`` means "off".
OPTIONAL_INT_OPTIONS = ("patch",)
#: The most block names a placement list may hold.
MAX_PLACEMENTS = 256
#: Float model options: each must be finite.
FLOAT_OPTIONS = ("b", "temperature", "tau")
#: Options that only initialise the weights (a pretrained file, a pre-training run): a model
#: built to receive trained weights drops them, so loading a checkpoint never reads another
#: file or trains anything (:func:`weights_options`).
INIT_OPTIONS = ("pretrained", "scnn_steps")


def check_options(name: str, options: dict) -> None:
    """Raises ValueError naming the option if ``options`` are not options of model ``name`` or
    an integer or float option is out of its bounds."""
    known = option_names(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(unknown)} (its options: {', '.join(known)})"
        )
    for key, value in options.items():
        if key in OPTIONAL_INT_OPTIONS and value is None:
            continue
        if key == "input_norm":
            check_input_norm(value)
        if key in INT_OPTION_LIMITS:
            lo, hi = INT_OPTION_LIMITS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"model option {key} must be an integer in [{lo}, {hi}], "
                                 f"got {value!r}")  # fmt: skip
        elif key == "placement" and not isinstance(value, str):
            if not isinstance(value, (list, tuple)) or len(value) > MAX_PLACEMENTS \
                    or not all(isinstance(v, str) for v in value):  # fmt: skip
                raise ValueError(f"model option placement must be a string or a list of at "
                                 f"most {MAX_PLACEMENTS} block names")  # fmt: skip
        elif key in FLOAT_OPTIONS and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):  # fmt: skip
                raise ValueError(f"model option {key} must be a finite number, got {value!r}")


def weights_options(options: dict) -> dict:
    """``options`` without :data:`INIT_OPTIONS`: what a model that receives trained weights is
    built with."""
    return {k: v for k, v in options.items() if k not in INIT_OPTIONS}


def build(name: str, **options) -> nn.Module:
    """The model registered as ``name``, built with ``options`` (its factory's arguments)."""
    factory = MODELS.get(name)
    check_options(name, options)
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
