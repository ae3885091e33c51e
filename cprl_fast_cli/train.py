"""cprl-fast train: train a quality model.

    cprl-fast train --dataset builtin --model cprl --arch resnet18 --epochs 2 --image-size 64
    cprl-fast train --config run.json --resume
    cprl-fast train --recipe native --dataset builtin-v2 --model resnet --arch resnet18 --epochs 34

Every run setting of TrainConfig is a flag; so is every option of every registered model (its
factory's arguments: --arch, --placement, --b, ...) and of every training objective (--lam,
--mode, --eps, ...): each goes to the chosen model or objective, and an option the chosen one
does not have is an error. --config reads a JSON or TOML file of the same names; flags given on
the command line override it, and both override the --recipe's settings (see
cprl_fast.presets.RECIPES; `native` is the recipe that learns the built-in data from scratch).
The choices and help below come from the registries of models,
objectives, datasets and attacks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import (
    CONVERTERS,
    OPTION_HELP,
    RUN_HELP,
    UserError,
    add_overwrite,
    add_recipe,
    entries_help,
    with_default,
)


def _defaults_text(kind: str, defaults: dict[str, str]) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in defaults.items())
    return f"({kind} {shown})"


def add_parser(sub) -> argparse.ArgumentParser:
    listing = load()
    p = sub.add_parser("train", help="train a quality model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--config", type=Path, help="JSON or TOML file of options (flags override)")
    p.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
    add_overwrite(p, "another run in out_dir: start over (removes its checkpoints and log)")
    add_recipe(p, "resized")
    choices = {"dataset": listing["datasets"], "model": sorted(listing["models"]),
               "objective": sorted(listing["objectives"])}  # fmt: skip
    about = {"model": listing["models"], "objective": listing["objectives"]}
    run = p.add_argument_group("run settings")
    for name, setting in listing["run_settings"].items():
        extra = f" ({entries_help(about[name])})" if name in about else ""
        run.add_argument(f"--{name.replace('_', '-')}", dest=name,
                         type=CONVERTERS[setting["type"]], default=None,
                         choices=choices.get(name),
                         help=with_default(f"{RUN_HELP[name]}{extra}",
                                           setting["default"]))  # fmt: skip
    for kind, group in (("model", "models"), ("objective", "objectives")):
        options = p.add_argument_group(
            f"{kind} options (each applies to the {group} named)"
        )
        for option, spec in listing[f"{kind}_options"].items():
            options.add_argument(
                f"--{option.replace('_', '-')}",
                dest=option,
                type=CONVERTERS[spec["type"]],
                default=None,
                help=f"{OPTION_HELP.get(option, option)} "
                f"{_defaults_text(f'default per {kind}:', spec['defaults'])}",
            )
    return p


def _read_config(path: Path) -> dict:
    from cprl_fast.io import MAX_JSON_BYTES, parse_json, read_regular_file

    try:  # a regular file of bounded size: never a FIFO's endless wait or a huge read
        raw = read_regular_file(path, "config file", MAX_JSON_BYTES)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    try:
        text = raw.decode("utf-8")
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = parse_json(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"cannot parse config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold an object of options, "
                        f"got a {type(data).__name__}")  # fmt: skip
    return data


def run(args: argparse.Namespace) -> int:
    from cprl_fast.io import json_text
    from cprl_fast.presets import recipe_settings
    from cprl_fast.train import TrainConfig
    from cprl_fast.train.runs import train_and_test

    given = _read_config(args.config) if args.config else {}
    settings = set(load()["run_settings"]) | set(load()["model_options"]) | \
        set(load()["objective_options"])  # fmt: skip
    given.update({k: v for k, v in vars(args).items() if v is not None and k in settings})
    values = recipe_settings(args.recipe)
    nested = {**values.pop("model_options", {}), **given.pop("model_options", {})}
    values.update(given)
    values["model_options"] = nested  # flat model options given override these
    if isinstance(values.get("placement"), str) and "," in values["placement"]:
        values["placement"] = [s.strip() for s in values["placement"].split(",")]
    cfg = TrainConfig.from_dict(values)
    arch = cfg.model_options.get("arch", "resnet50")
    if cfg.device == "cpu" and cfg.image_size >= 224 and arch in ("resnet50", "resnet101"):
        print(f"note: {arch} at {cfg.image_size} px (the paper's setting) trains for hours on "
              "a CPU (the progress bar shows the estimate); --arch resnet18 --image-size 64 "
              "trains in minutes, --device cuda uses a GPU", flush=True)  # fmt: skip
    summary = train_and_test(cfg, resume=args.resume, overwrite=args.overwrite, log=print)
    print(json_text(summary), end="")
    return 0
