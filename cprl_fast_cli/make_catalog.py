"""Writes or checks ``catalog.json``, the static listing of the registries that the command
line's parser reads (:mod:`cprl_fast_cli.catalog`): datasets, synthetic distortions, splits,
models and their factories' options, training objectives and theirs, the run settings of
TrainConfig, attacks and their named suites, the audit's budgets, model presets, export formats,
the pixel limit and the most threads per core.

    python -m cprl_fast_cli.make_catalog           # exit 1 if the file differs
    python -m cprl_fast_cli.make_catalog --write   # after changing a registry
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cprl_fast_cli.catalog import PATH


def _type_name(tp: object) -> str:
    """``int``, ``float``, ``bool`` or ``str``: what the command line converts a value to
    (``X | None`` is ``X``; anything else is taken as text)."""
    import types
    import typing

    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(inner[0]) if inner else "str"
    return {bool: "bool", int: "int", float: "float"}.get(tp, "str")  # type: ignore[arg-type]


def _abouts(registry) -> dict[str, str]:
    return {name: str(registry.info(name).get("about", "")) for name in registry}


def build() -> dict[str, Any]:
    """The listing as the registries hold it now (imports cprl_fast, and so torch)."""
    import dataclasses
    import inspect
    import typing

    from cprl_fast.attacks import ATTACKS, SUITES
    from cprl_fast.audit import DEFAULT_EPS
    from cprl_fast.certify import FEATURE_LAYERS
    from cprl_fast.data import DATASETS, SPLITS
    from cprl_fast.data.distortions import DISTORTIONS
    from cprl_fast.export import FORMATS
    from cprl_fast.images import DEFAULT_MAX_PIXELS
    from cprl_fast.models import MODELS
    from cprl_fast.presets import MODEL_PRESETS, RECIPES
    from cprl_fast.reports import eps_label
    from cprl_fast.reproduce import BASELINES
    from cprl_fast.threads import THREADS_PER_CORE
    from cprl_fast.train import TrainConfig
    from cprl_fast.train.objectives import OBJECTIVES, option_fields
    from cprl_fast.train.ranking import RankingConfig

    model_options: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        fn = MODELS.get(name)
        hints = typing.get_type_hints(fn)
        for p in inspect.signature(fn).parameters.values():
            entry = model_options.setdefault(
                p.name, {"type": _type_name(hints.get(p.name, str)), "defaults": {}}
            )
            entry["defaults"][name] = str(p.default)
    objective_options: dict[str, dict[str, Any]] = {}
    for name in OBJECTIVES:
        for option, (tp, default) in option_fields(name).items():
            entry = objective_options.setdefault(option, {"type": _type_name(tp), "defaults": {}})
            entry["defaults"][name] = str(default)
    hints = typing.get_type_hints(TrainConfig)
    run_settings = {
        f.name: {
            "type": _type_name(hints[f.name]),
            "default": str(f.default if f.default is not dataclasses.MISSING else None),
        }
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("model_options", "objective_options")
    }
    return {
        "datasets": list(DATASETS),
        "distortions": list(DISTORTIONS),
        "ranking_distortions": list(RankingConfig().kinds),
        "splits": list(SPLITS),
        "models": _abouts(MODELS),
        "objectives": _abouts(OBJECTIVES),
        "attacks": _abouts(ATTACKS),
        "model_options": model_options,
        "objective_options": objective_options,
        "run_settings": run_settings,
        "audit_eps": ",".join(eps_label(e) for e in DEFAULT_EPS),
        "suites": {name: list(names) for name, names in SUITES.items()},
        "model_presets": list(MODEL_PRESETS),
        "recipes": {name: {"about": about, "settings": settings}
                    for name, (about, settings) in RECIPES.items()},
        "baselines": list(BASELINES),
        "feature_layers": list(FEATURE_LAYERS),
        "export_formats": list(FORMATS),
        "max_pixels": int(DEFAULT_MAX_PIXELS),
        "threads_per_core": int(THREADS_PER_CORE),
    }


def text(listing: dict[str, Any]) -> str:
    """The file's text: indented JSON, one trailing newline."""
    return json.dumps(listing, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cprl_fast_cli.make_catalog",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--write", action="store_true", help=f"rewrite {PATH.name}")
    args = parser.parse_args(argv)
    now = text(build())
    if args.write:
        PATH.write_text(now)
        print(f"wrote {PATH}")
        return 0
    same = PATH.is_file() and PATH.read_text() == now
    print(f"{PATH} {'matches' if same else 'differs from'} the registries")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
