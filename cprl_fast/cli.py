"""The cprl-fast command: train, evaluate, reproduce and demo.

    cprl-fast train --dataset builtin --model cprl --arch resnet18 --epochs 2 --image-size 64
    cprl-fast train --config run.json --resume

Every run setting of TrainConfig is a flag; so is every option of every registered model (its
factory's arguments: --arch, --placement, --b, ...) and of every training objective (--lam,
--mode, --eps, ...): each goes to the chosen model or objective, and an option the chosen one
does not have is an error. --config reads a JSON or TOML file of the same names; flags given on
the command line override it. The choices and help below come from the registries of models,
objectives, datasets and attacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import sys
import types
import typing
from pathlib import Path

#: Help of the run settings (TrainConfig's fields that are not model or objective options).
RUN_HELP = {
    "dataset": "dataset name",
    "root": "folder the dataset was unpacked to (builtin: its cache folder)",
    "split_file": "JSON split file to reuse (written there if missing)",
    "split_seed": "seed of the 4:1 scene-disjoint split",
    "model": "quality model",
    "objective": "training objective (default: the model's own)",
    "lr": "learning rate of every AdamW optimiser",
    "weight_decay": "AdamW weight decay",
    "batch_size": "images per iteration",
    "epochs": "passes over the training split",
    "image_size": "side of the square training and test crops, pixels",
    "clip_grad": "clip each parameter group's gradient norm to this (default: no clipping)",
    "bf16": "bf16 autocast (CUDA only)",
    "seed": "seed of initialisation, data order and augmentation",
    "num_workers": "DataLoader worker processes",
    "sync_bn": "SyncBatchNorm under DDP (CUDA only)",
    "freeze_bn": "BatchNorm uses its running statistics while training",
    "device": "cpu, cuda or cuda:N",
    "out_dir": "folder for log.csv, last.pt and best.pt",
    "max_steps": "stop after this many iterations in all (default: epochs x batches)",
}
#: Help of model and objective options that several entries share.
OPTION_HELP = {
    "arch": "ResNet depth: resnet18, resnet34, resnet50 or resnet101",
    "pretrained": "local state-dict file of the backbone (ImageNet weights)",
    "placement": "CA placement: last (last block of each stage), all, or comma-separated blocks",
    "b": "initial offset b of every CA module (0.5 keeps every channel)",
    "temperature": "temperature T of the CA mask's sigmoid",
    "rank": "hard (the paper) or soft rank in the CA modules",
    "tau": "soft-rank temperature, in units of the channel means",
    "units": "LWTA group size",
    "bins": "NIMA score bins",
    "scnn_steps": "DBCNN: S-CNN pre-training steps on the built-in distortions",
    "lam": "weight lambda of the intervention losses",
    "mode": "faithful (Algorithm 1's alternating order) or fast (one backward per iteration)",
    "sigma": "std of NIMA's target distribution around the label, on [0, 1]",
    "eps": "L-infinity budget of the training attack, pixel units (e.g. 0.0039 = 1/255)",
    "steps": "PGD steps per training batch",
    "weight": "weight of the input-gradient penalty",
}


class UserError(Exception):
    """A mistake in what the user asked for: one line on stderr, exit status 2."""


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _arg_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arg_type(inner[0]) if inner else str
    return {bool: _parse_bool, int: int, float: float, str: str}.get(tp, str)


def _with_default(text: str, default: object) -> str:
    return text if "default:" in text else f"{text} (default: {default})"


def _entries_help(registry) -> str:
    return "; ".join(f"{n}: {registry.info(n).get('about', '')}".rstrip(": ") for n in registry)


def _model_options() -> dict[str, tuple[object, dict[str, object]]]:
    """option -> (type, {model: default}) over every registered model."""
    from cprl_fast.models import MODELS

    out: dict[str, tuple[object, dict[str, object]]] = {}
    for name in MODELS:
        fn = MODELS.get(name)
        hints = typing.get_type_hints(fn)
        for p in inspect.signature(fn).parameters.values():
            tp = hints.get(p.name, str)
            out.setdefault(p.name, (tp, {}))[1][name] = p.default
    return out


def _objective_options() -> dict[str, tuple[object, dict[str, object]]]:
    from cprl_fast.train.objectives import OBJECTIVES, option_fields

    out: dict[str, tuple[object, dict[str, object]]] = {}
    for name in OBJECTIVES:
        for option, (tp, default) in option_fields(name).items():
            out.setdefault(option, (tp, {}))[1][name] = default
    return out


def _defaults_text(kind: str, defaults: dict[str, object]) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in defaults.items())
    return f"({kind} {shown})"


def _train_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.data import DATASETS
    from cprl_fast.models import MODELS
    from cprl_fast.train import TrainConfig
    from cprl_fast.train.objectives import OBJECTIVES

    p = sub.add_parser("train", help="train a quality model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--config", type=Path, help="JSON or TOML file of options (flags override)")
    p.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an out_dir that holds another run (removes its "
                   "checkpoints and log)")  # fmt: skip
    hints = typing.get_type_hints(TrainConfig)
    choices = {"dataset": DATASETS, "model": MODELS.names(), "objective": OBJECTIVES.names()}
    run = p.add_argument_group("run settings")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("model_options", "objective_options"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        extra = ""
        if f.name == "model":
            extra = f" ({_entries_help(MODELS)})"
        elif f.name == "objective":
            extra = f" ({_entries_help(OBJECTIVES)})"
        run.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                         type=_arg_type(hints[f.name]), default=None,
                         choices=choices.get(f.name),
                         help=_with_default(f"{RUN_HELP[f.name]}{extra}", default))  # fmt: skip
    models = p.add_argument_group("model options (each applies to the models named)")
    for option, (tp, defaults) in _model_options().items():
        models.add_argument(f"--{option.replace('_', '-')}", dest=option, type=_arg_type(tp),
                            default=None, help=f"{OPTION_HELP.get(option, option)} "
                            f"{_defaults_text('default per model:', defaults)}")  # fmt: skip
    objectives = p.add_argument_group("objective options (each applies to the objectives named)")
    for option, (tp, defaults) in _objective_options().items():
        objectives.add_argument(
            f"--{option.replace('_', '-')}",
            dest=option,
            type=_arg_type(tp),
            default=None,
            help=f"{OPTION_HELP.get(option, option)} "
            f"{_defaults_text('default per objective:', defaults)}",
        )
    return p


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"cannot parse config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold an object of options, "
                        f"got a {type(data).__name__}")  # fmt: skip
    return data


def _train(args: argparse.Namespace) -> int:
    from cprl_fast.run import load_run_splits
    from cprl_fast.train import TrainConfig, Trainer

    values = _read_config(args.config) if args.config else {}
    values.update(
        {
            k: v
            for k, v in vars(args).items()
            if v is not None and k not in ("config", "resume", "overwrite", "command", "debug")
        }
    )
    if isinstance(values.get("placement"), str) and "," in values["placement"]:
        values["placement"] = [s.strip() for s in values["placement"].split(",")]
    cfg = TrainConfig.from_dict(values)
    splits = load_run_splits(cfg)
    print(f"train: {splits['train']}, test: {splits['test']}; writing to {cfg.out_dir}")
    trainer = Trainer(cfg, splits["train"], splits["test"])
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    out = Path(cfg.out_dir)
    written = [str(p) for p in (out / "last.pt", out / "best.pt") if p.is_file()]
    print(json.dumps({"test": result, "checkpoints": written}, indent=1))
    return 0


def _attack_help() -> str:
    from cprl_fast.attacks import ATTACKS

    return "comma-separated attacks: " + _entries_help(ATTACKS)


def _evaluate_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.data import DATASETS

    p = sub.add_parser(
        "evaluate",
        help="clean and attacked SRCC/PLCC/MSE of trained models (Tables 1, 2, 4; Figs 4-6)",
        description="Evaluates checkpoints clean and under attacks; writes results.md/.csv/.json "
        "(and with --figures fig4_landscape.png, fig5_channels.png, fig6_srcc_vs_eps.png).",
    )
    p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH",
                   help="a checkpoint written by cprl-fast train, named NAME in the tables "
                   "(default: its run folder's name); repeat to compare models")  # fmt: skip
    p.add_argument("--dataset", choices=DATASETS,
                   help="dataset (default: the one the first model was trained on)")  # fmt: skip
    p.add_argument("--root", help="dataset folder (default: the first model's training run's)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"],
                   help="which split to evaluate on (default: test)")  # fmt: skip
    p.add_argument("--attack", default="fgsm,pgd,reflect",
                   help=f"{_attack_help()} (default: fgsm,pgd,reflect)")  # fmt: skip
    p.add_argument(
        "--eps",
        default="1/255",
        help="L-infinity budget in pixel units, e.g. 1/255 (default: 1/255)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--figures", action="store_true", help="also draw Figs 4, 5 and 6")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("reports/evaluate"),
        help="folder for the tables and figures (default: reports/evaluate)",
    )
    return p


def _attack_option(p) -> None:
    p.add_argument("--attack", default="fgsm,pgd,reflect",
                   help=f"{_attack_help()} (default: fgsm,pgd,reflect)")  # fmt: skip


def _attack_list(text: str) -> list[str]:
    from cprl_fast.attacks import check_attack_names

    return check_attack_names(a.strip() for a in text.split(",") if a.strip())


def _protocol_options(p, out: str, arch: str, size: int, epochs: int, lr: float) -> None:
    """The options `reproduce` and `demo` share, with each command's defaults."""
    from cprl_fast.data import DATASETS

    p.add_argument("--dataset", default="builtin", choices=DATASETS,
                   help="dataset (default: builtin)")  # fmt: skip
    p.add_argument("--root", help="folder the dataset was unpacked to")
    p.add_argument("--out-dir", type=Path, default=Path(out),
                   help=f"report folder, resumable (default: {out})")  # fmt: skip
    p.add_argument(
        "--eps", default="1/255", help="attack budget in pixel units, e.g. 1/255 (default: 1/255)"
    )
    p.add_argument("--arch", default=arch, help=f"{OPTION_HELP['arch']} (default: {arch})")
    p.add_argument("--image-size", type=int, default=size,
                   help=f"{RUN_HELP['image_size']} (default: {size})")  # fmt: skip
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"{RUN_HELP['epochs']} (default: {epochs})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16,
                   help=f"{RUN_HELP['batch_size']} (default: 16)")  # fmt: skip
    p.add_argument("--lr", type=float, default=lr, help=f"{RUN_HELP['lr']} (default: {lr:g})")
    p.add_argument("--max-steps", type=int, help=RUN_HELP["max_steps"])
    p.add_argument("--device", default="cpu", help=f"{RUN_HELP['device']} (default: cpu)")


def _reproduce_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.reproduce import BASELINES

    p = sub.add_parser(
        "reproduce",
        help="the paper's protocol for one dataset: every model, attack, table and figure",
        description="Trains (or resumes) ResNet, CPRL, the b sweep and CA alone, attacks them, and "
        "writes report.md / report.json, tables/ and figures/ into --out-dir. Run it again to "
        "resume after an interruption.",
    )
    _protocol_options(p, out="reports/reproduce", arch="resnet50", size=320, epochs=10, lr=3e-5)
    _attack_option(p)
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help="comma-separated models to train beside ResNet and CPRL ('' for none; "
                   f"default: {','.join(BASELINES)})")  # fmt: skip
    return p


def _demo_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="train CPRL and a plain ResNet on the built-in data, attack both, write a report",
        description="The one-command demo: trains a plain ResNet-18 and CPRL (ResNet-18 with CA "
        "modules, PNS game) on the built-in synthetic dataset, attacks both with FGSM and PGD at "
        "eps = 1/255 and over an eps sweep, prints a Table-1-style comparison and writes "
        "report.md, tables and figures to --out-dir. Point it at a real dataset with "
        "--dataset/--root and a GPU with --device cuda.",
    )
    _protocol_options(p, out="reports/demo", arch="resnet18", size=64, epochs=8, lr=3e-4)
    p.set_defaults(attack="fgsm,pgd", demo=True)
    return p


def _reproduce(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.models import MODELS
    from cprl_fast.reproduce import reproduce
    from cprl_fast.train import TrainConfig

    eps = parse_eps(args.eps)
    names = _attack_list(args.attack)
    base = TrainConfig(model_options={"arch": args.arch}, image_size=args.image_size,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       max_steps=args.max_steps, device=args.device)  # fmt: skip
    demo = getattr(args, "demo", False)
    baselines = [] if demo else [b.strip() for b in args.baselines.split(",") if b.strip()]
    for name in baselines:
        MODELS.check(name)
    reproduce(args.dataset, args.root, args.out_dir, base, eps, names, ablations=not demo,
              baselines=baselines)  # fmt: skip
    print((args.out_dir / "tables" / "main" / "results.md").read_text())
    print(
        "How to read this: 'clean' rows are the models on unmodified test images; 'fgsm' and "
        "'pgd' rows are the same images after an attack changing each pixel by at most eps. "
        "A robust model keeps its SRCC/PLCC high and its MSE and score_change low under attack; "
        "robustness is R of docs/maths.md section 6 (higher is better)."
    )
    print(f"report: {args.out_dir / 'report.md'} (figures in {args.out_dir / 'figures'})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import evaluate, parse_eps, write_report
    from cprl_fast.run import draw_figures, load_run_splits, load_trained, parse_named_path

    eps = parse_eps(args.eps)
    names = _attack_list(args.attack)
    models = {}
    for text in args.checkpoint:
        name, path = parse_named_path(text)
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        trained = load_trained(path, args.device, name)
        if trained.name in models:
            raise UserError(f"two checkpoints are named {trained.name!r}: name them, e.g. "
                            f"--checkpoint other={path}")  # fmt: skip
        models[trained.name] = trained
    cfg0 = next(iter(models.values())).config
    dataset = load_run_splits(cfg0, (args.split,), args.dataset, args.root)[args.split]
    results = {
        name: evaluate(t.model, dataset, names, eps, args.batch_size, args.device)
        for name, t in models.items()
    }
    paths = write_report(results, args.out_dir, f"{dataset.name} {args.split}, eps = {args.eps}")
    if args.figures:
        plain = {n: t.model for n, t in models.items()}
        draw_figures(plain, dataset, args.out_dir, args.batch_size, args.device)
    print((args.out_dir / "results.md").read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "reproduce": _reproduce, "demo": _reproduce}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="cprl-fast",
                                     description="Fast no-reference image quality assessment "
                                     "with CPRL: train, attack, evaluate.")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _reproduce_parser(sub)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError, FileNotFoundError, OSError, TypeError, RuntimeError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"cprl-fast {args.command}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
