"""The cprl-fast command: train a quality model, then evaluate, reproduce, demo, audit,
study, score, info and export.

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
import csv
import dataclasses
import inspect
import io
import json
import logging
import shlex
import sys
import time
import types
import typing
from pathlib import Path

#: Help of the run settings (TrainConfig's fields that are not model or objective options).
RUN_HELP = {
    "dataset": "dataset name",
    "root": "folder the dataset was unpacked to (builtin: its cache folder)",
    "split_file": "JSON split file to reuse (written there if missing)",
    "split_seed": "seed of the 4:1 scene-disjoint split",
    "val_ratio": "share of the training scenes held out (scene-disjoint) to choose best.pt; the "
    "test split is used only to report",
    "folds": "K-fold cross-validation by scene instead of the 4:1 split (every image is a test "
    "image in one of the K runs)",
    "fold": "which of the folds is the test side (0 .. folds-1)",
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
    "noise_sigma": "train on images plus Gaussian noise of this standard deviation (pixel "
    "units; for cprl-fast audit --certify; default: 0, off)",
}
#: Help of model and objective options that several entries share.
OPTION_HELP = {
    "arch": "ResNet depth: resnet18, resnet34, resnet50 or resnet101",
    "pretrained": "backbone initialisation: imagenet (torchvision's weights, from torch's "
    "cache or downloaded) or a local state-dict file",
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


class _Parser(argparse.ArgumentParser):
    """argparse with argument errors as one line (the command, the error, where help is) and
    exit status 2, like every other user error; subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


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
    from cprl_fast.train import TrainConfig, Trainer
    from cprl_fast.train.runs import load_run_splits

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
    arch = cfg.model_options.get("arch", "resnet50")
    if cfg.device == "cpu" and cfg.image_size >= 224 and arch in ("resnet50", "resnet101"):
        print(f"note: {arch} at {cfg.image_size} px (the paper's setting) trains for hours on "
              "a CPU (the progress bar shows the estimate); --arch resnet18 --image-size 64 "
              "trains in minutes, --device cuda uses a GPU", flush=True)  # fmt: skip
    splits = load_run_splits(cfg, ("train", "val", "test"))
    print(f"train: {splits['train']}, val: {splits['val']}, test: {splits['test']}; "
          f"writing to {cfg.out_dir}")  # fmt: skip
    trainer = Trainer(cfg, splits["train"], splits["val"])
    result = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    out = Path(cfg.out_dir)
    written = [str(p) for p in (out / "last.pt", out / "best.pt") if p.is_file()]
    summary = {"val": result, "checkpoints": written}
    if written:  # the test split, once, with the model chosen on val (or the last one)
        from cprl_fast.evaluate import predictions
        from cprl_fast.metrics import evaluate_scores
        from cprl_fast.train.checkpoint import load

        chosen = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
        trainer.model.load_state_dict(load(chosen, map_location=trainer.device)["model"])
        pred, target = predictions(trainer.model.eval(), splits["test"], None, 0.0,
                                   cfg.batch_size, trainer.device)  # fmt: skip
        summary["test"] = {**evaluate_scores(pred, target), "model": chosen.name}
    from cprl_fast.io import json_text

    print(json_text(summary), end="")
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
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="which split to evaluate on (default: test)")  # fmt: skip
    p.add_argument("--attack", default="fgsm,pgd,reflect",
                   help=f"{_attack_help()} (default: fgsm,pgd,reflect)")  # fmt: skip
    p.add_argument(
        "--eps",
        default="1/255",
        help="L-infinity budget in pixel units, e.g. 1/255 (default: 1/255)",
    )
    _batch_and_device(p)
    p.add_argument("--figures", action="store_true", help="also draw Figs 4, 5 and 6")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("reports/evaluate"),
        help="folder for the tables and figures (default: reports/evaluate)",
    )
    return p


def _batch_and_device(p) -> None:
    """--batch-size and --device, as evaluate, audit and score take them."""
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


def _attack_option(p) -> None:
    p.add_argument("--attack", default="fgsm,pgd,reflect",
                   help=f"{_attack_help()} (default: fgsm,pgd,reflect)")  # fmt: skip


def _attack_list(text: str) -> list[str]:
    from cprl_fast.attacks import check_attack_names

    return check_attack_names(a.strip() for a in text.split(",") if a.strip())


def _protocol_options(p, out: str, arch: str, size: int, epochs: int, lr: float,
                      eps: str = "1/255", dataset: str = "builtin") -> None:  # fmt: skip
    """The options `reproduce`, `demo` and `study` share, with each command's defaults."""
    from cprl_fast.data import DATASETS

    p.add_argument("--dataset", default=dataset, choices=DATASETS,
                   help=f"dataset (default: {dataset})")  # fmt: skip
    p.add_argument("--root", help="folder the dataset was unpacked to")
    p.add_argument("--out-dir", type=Path, default=Path(out),
                   help=f"report folder, resumable (default: {out})")  # fmt: skip
    what = "budget" if "," not in eps else "comma-separated budgets"
    p.add_argument("--eps", default=eps,
                   help=f"attack {what} in pixel units, e.g. 1/255 (default: {eps})")  # fmt: skip
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
        "modules, PNS game) on the built-in synthetic dataset, attacks both with FGSM, PGD and the "
        "rank-order attack at "
        "eps = 1/255 and over an eps sweep, prints a Table-1-style comparison and writes "
        "report.md, tables and figures to --out-dir. Point it at a real dataset with "
        "--dataset/--root and a GPU with --device cuda.",
    )
    _protocol_options(p, out="reports/demo", arch="resnet18", size=64, epochs=8, lr=3e-4)
    p.set_defaults(attack="fgsm,pgd,rank", demo=True)
    return p


def _reproduce(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.models import MODELS
    from cprl_fast.reproduce import reproduce
    from cprl_fast.train import TrainConfig

    start = time.perf_counter()
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
        "How to read this: 'clean' rows are the models on unmodified test images; each attack's "
        "row is the same images after an attack changing each pixel by at most eps, and "
        "'worst' the lowest SRCC over the attacks. The brackets are 95% bootstrap intervals "
        "over the test images: two numbers whose intervals overlap widely are not shown to "
        "differ (the paired comparison below the table says which differences are). A robust "
        "model keeps its SRCC/PLCC high and its MSE and score_change low under attack; "
        "robustness is R of docs/maths.md section 6 (higher is better)."
    )
    print(f"report: {args.out_dir / 'report.md'} (figures in {args.out_dir / 'figures'})")
    print(_next_steps(args.out_dir))
    print(f"{args.command} took {time.perf_counter() - start:.0f} s (wall time)")
    return 0


def _next_steps(out_dir: Path) -> str:
    """Where the protocol's models are, and three commands to try on them (the demo's ending)."""
    models = sorted(p for p in (out_dir / "models").glob("*/best.pt"))
    if not models:
        return ""
    chosen = models[0]  # the first by name (the demo's: cprl, then resnet)
    q = shlex.quote
    return "\n".join([
        "models: " + ", ".join(str(p) for p in models),
        f"next, for example on {chosen.parent.name}'s:",
        f"  cprl-fast score --model {q(str(chosen))} PHOTO.png   (a file or a folder of images)",
        f"  cprl-fast audit --checkpoint {q(str(chosen))} --out-dir "
        f"{q(str(out_dir / 'audit'))}",
        f"  cprl-fast export {q(str(chosen))} --format pt2",
    ])  # fmt: skip


def _evaluate(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import evaluate, parse_eps, write_report
    from cprl_fast.figures import draw_figures
    from cprl_fast.train.runs import load_run_splits, load_trained

    eps = parse_eps(args.eps)
    names = _attack_list(args.attack)
    models = {}
    for text in args.checkpoint:
        name, path = parse_named_path(text)
        trained = load_trained(path, args.device, name)
        if trained.name in models:
            raise UserError(f"two checkpoints are named {trained.name!r}: name them, e.g. "
                            f"--checkpoint other={path}")  # fmt: skip
        models[trained.name] = trained
    cfg0 = next(iter(models.values())).config
    dataset = load_run_splits(cfg0, (args.split,), args.dataset, args.root,
                              from_card=True)[args.split]  # fmt: skip
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


def parse_named_path(text: str) -> tuple[str | None, Path]:
    """``"name=path"`` -> ``(name, path)``; a plain ``"path"`` -> ``(None, path)``."""
    name, sep, path = str(text).partition("=")
    if sep and name and "/" not in name:
        return name, Path(path)
    return None, Path(text)


def _eps_text(eps) -> str:
    """Budgets as the flags write them: ``1/255,2/255``."""
    return ",".join(f"{e * 255:g}/255" for e in eps)


def _audit_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.audit import DEFAULT_EPS, SUITE
    from cprl_fast.certify import FEATURE_LAYERS
    from cprl_fast.data import DATASETS

    eps = _eps_text(DEFAULT_EPS)
    p = sub.add_parser(
        "audit",
        help="robustness audit of any quality model: attack suite, worst case, masking checks",
        description="Attacks a model with a fixed suite at several budgets and writes "
        "report.md/json and srcc_vs_eps.png: SRCC per attack and eps with 95% bootstrap "
        "intervals, the worst case per eps, and gradient-masking diagnostics (docs in "
        "cprl_fast/audit.py). The model is a checkpoint of cprl-fast train, or any "
        "torch.nn.Module mapping images [N, 3, H, W] in [0, 1] to scores [N], given as "
        "--module package.module:callable (a class or a function returning the module).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a checkpoint written by cprl-fast train")
    which.add_argument("--module", metavar="MODULE:CALLABLE",
                       help="import path of a callable returning the model")  # fmt: skip
    p.add_argument("--dataset", choices=DATASETS,
                   help="dataset (default: the checkpoint's; builtin for --module)")  # fmt: skip
    p.add_argument("--root", help="dataset folder (default: the checkpoint's run's)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="which split to audit on (default: test)")  # fmt: skip
    p.add_argument(
        "--image-size",
        type=int,
        default=224,
        help="crop side for --module models (checkpoints use their own; default 224)",
    )
    p.add_argument("--eps", default=eps, help=f"comma-separated budgets (default: {eps})")
    p.add_argument("--attack", default=",".join(SUITE),
                   help=f"{_attack_help()} (default: {','.join(SUITE)})")  # fmt: skip
    _batch_and_device(p)
    p.add_argument("--transfer-from", metavar="CKPT",
                   help="another model's checkpoint: adds the transfer attack (images crafted on "
                   "it) and its check")  # fmt: skip
    p.add_argument(
        "--record",
        action="store_true",
        help="write the audit's summary into the checkpoint's model card",
    )
    _certify_options(p)
    p.add_argument("--certify-layer", choices=FEATURE_LAYERS,
                   help="with --certify-feature: the layer whose features get the noise "
                   "(feature-space smoothing, FS-IQA; quality ResNets)")  # fmt: skip
    p.add_argument("--certify-feature", default="", metavar="SIGMA[,SIGMA...]",
                   help="feature-space smoothing at these noise levels (feature units) beside "
                   "--certify's input-space rows, with the time each takes")  # fmt: skip
    p.add_argument("--certify-lipschitz", choices=("power", "product"), default="power",
                   help="input-to-feature Lipschitz constant: power (per-image power-iteration "
                   "estimate, not a proof) or product (proven bound, plain ResNets; default: "
                   "power)")  # fmt: skip
    p.add_argument("--out-dir", type=Path, default=Path("reports/audit"),
                   help="folder for report.md, report.json, srcc_vs_eps.png "
                   "(default: reports/audit)")  # fmt: skip
    return p


def _load_module(text: str, device: str):
    import importlib

    from cprl_fast.checks import check_device

    module, sep, attr = text.partition(":")
    if not (sep and module and attr):
        raise UserError(f"--module must be package.module:callable, got {text!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"--module {text}: {err}") from None
    from torch import nn

    model = fn()
    if not isinstance(model, nn.Module):
        raise UserError(f"--module {text} returned {type(model).__name__}, not a torch.nn.Module")
    return model.to(check_device(device)).eval()


def _audit(args: argparse.Namespace) -> int:
    from cprl_fast.audit import audit
    from cprl_fast.data import load_splits
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.train.runs import load_run_splits, load_trained

    eps = [parse_eps(e) for e in args.eps.split(",") if e.strip()]
    if not eps:
        raise UserError("--eps needs at least one budget, e.g. 1/255,4/255")
    names = _attack_list(args.attack)
    if args.record and not args.checkpoint:
        raise UserError("--record writes into a checkpoint's model card: it needs --checkpoint")
    if args.checkpoint:
        trained = load_trained(args.checkpoint, args.device)
        model, title = trained.model, trained.name
        dataset = load_run_splits(trained.config, (args.split,), args.dataset, args.root,
                                  from_card=True)[args.split]  # fmt: skip
    else:
        model, title = _load_module(args.module, args.device), args.module
        dataset = load_splits(args.dataset or "builtin", args.root, (args.split,),
                              image_size=args.image_size)[args.split]  # fmt: skip
    source = None
    if args.transfer_from:
        if not Path(args.transfer_from).exists():
            raise UserError(f"--transfer-from: checkpoint not found: {args.transfer_from}")
        source = load_trained(args.transfer_from, args.device).model
    sigmas = _certify_sigmas(args.certify)
    feature = _certify_sigmas(args.certify_feature, "--certify-feature")
    if feature and args.certify_layer is None:
        raise UserError("--certify-feature needs --certify-layer (where the noise goes)")
    report = audit(model, dataset, eps, names, args.batch_size, args.device,
                   out_dir=args.out_dir, title=title, source=source, certify_sigmas=sigmas,
                   certify_n=args.certify_n, certify_layer=args.certify_layer,
                   certify_feature_sigmas=feature,
                   certify_lipschitz=args.certify_lipschitz)  # fmt: skip
    print((args.out_dir / "report.md").read_text())
    failed = [c["check"] for c in report["diagnostics"] if not c["passed"]]
    listed = ": " + ", ".join(failed) if failed else ""
    print(f"wrote {args.out_dir}/report.md, report.json, srcc_vs_eps.png; "
          f"{len(failed)} diagnostic(s) failed{listed}")  # fmt: skip
    if args.record:
        from cprl_fast.audit import record

        record(args.checkpoint, report, dataset)
        print(f"recorded the audit summary in {args.checkpoint} (cprl-fast info shows it)")
    return 0


def _score_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.images import DEFAULT_MAX_PIXELS

    p = sub.add_parser(
        "score",
        help="score image files and folders with a trained model",
        description="Scores images with a checkpoint of cprl-fast train: files and folders "
        "(searched recursively, in sorted order), with the preprocessing the model was trained "
        "with. Writes path,score rows as CSV (or JSON with --out *.json; stdout without --out). "
        "Scores are in [0, 1], higher is better quality. A file that cannot be read, is over "
        "the pixel limit or gets a non-finite score is listed with its error and counted, "
        "never skipped silently; the exit status is 1 if any failed. CSV cells that a "
        "spreadsheet would run as a formula (leading =, +, -, @, tab, CR) are prefixed with '.",
    )
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--model", required=True, help="checkpoint (best.pt) of cprl-fast train")
    p.add_argument("--out", type=Path, help="CSV or JSON file to write (default: CSV to stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="per-image pixel limit: larger images are failures, read no further "
                   f"than their header (default: {DEFAULT_MAX_PIXELS} = 8192 x 8192)")  # fmt: skip
    _batch_and_device(p)
    return p


def _score(args: argparse.Namespace) -> int:
    from cprl_fast.checks import check_device
    from cprl_fast.images import check_max_pixels
    from cprl_fast.io import check_output, csv_cell, json_text, printable, write_text_atomic
    from cprl_fast.score import image_files, load_model

    check_device(args.device)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_max_pixels(args.max_pixels, "--max-pixels")
    if args.out is not None:  # checked before any work
        check_output(args.out, args.overwrite, "--out", (".csv", ".json"))
    files = image_files(args.paths)  # a missing path is an error before any work
    metric = load_model(args.model, args.device, args.batch_size, max_pixels=args.max_pixels)
    done, failed = metric.score(files, progress=True)
    rows = [{"path": n, "score": s, "error": ""} for n, s in done]
    rows += [{"path": f.path, "score": None, "error": f.error} for f in failed]
    order = {str(f): i for i, f in enumerate(files)}
    rows.sort(key=lambda r: order.get(r["path"], len(order)))
    if args.out is not None and args.out.suffix.lower() == ".json":
        text = json_text({"model": str(args.model), "lower_better": False,
                          "score_range": [0.0, 1.0], "scores": rows})  # fmt: skip
    else:
        table = io.StringIO()
        w = csv.writer(table, lineterminator="\n")
        w.writerow(["path", "score", "error"])
        for r in rows:
            w.writerow([csv_cell(r["path"]), "" if r["score"] is None else f"{r['score']:.6f}",
                        csv_cell(r["error"])])  # fmt: skip
        text = table.getvalue()
    if args.out is None:
        print(text, end="")
    else:
        write_text_atomic(args.out, text)
    for f in failed:
        print(f"cprl-fast score: cannot score {printable(f.path)}: {printable(f.error)}",
              file=sys.stderr)  # fmt: skip
    where = f" to {printable(str(args.out))}" if args.out else ""
    print(f"scored {len(done)} image(s){where}; {len(failed)} could not be scored",
          file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _info_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="print a checkpoint's model card",
        description="Prints what produced a checkpoint of cprl-fast train: model and options, "
        "objective, dataset and split identity, image size, steps, validation SRCC, thread "
        "count and library versions (JSON with --json).",
    )
    p.add_argument("checkpoint", help="best.pt or last.pt of a run")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    return p


def model_card(path: Path) -> dict:
    """What a checkpoint records about the run that produced it."""
    from cprl_fast.train.checkpoint import card_config, load
    from cprl_fast.train.runs import card_train_config

    state = load(path)
    cfg = card_train_config(state, path)  # the card is checked against its schema
    config = {**card_config(state), "objective": cfg.objective_name}  # the default, named
    split = state.get("split", "{}")
    split = json.loads(split) if isinstance(split, str) else split
    keys = ("model", "model_options", "objective", "objective_options", "dataset", "image_size",
            "epochs", "batch_size", "lr", "seed", "split_seed", "val_ratio")  # fmt: skip
    return {
        "checkpoint": str(path),
        **{k: config.get(k) for k in keys},
        "split": split,
        "steps": state.get("step"),
        "best_val_srcc": state.get("best"),
        "threads": state.get("threads"),
        "versions": state.get("versions", {}),
        "audit": state.get("audit"),
    }


def _info(args: argparse.Namespace) -> int:
    card = model_card(Path(args.checkpoint))
    if args.json:
        from cprl_fast.io import json_text

        print(json_text(card), end="")
        return 0
    for key, value in card.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"{key:>18}: {text}")
    return 0


def _export_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.export import FORMATS

    p = sub.add_parser(
        "export",
        help="export a trained model: model-only safetensors, or torch.export + AOTInductor",
        description="--format weights: a model-only safetensors file (the model card in its "
        "metadata; load_model, score, info, evaluate and audit read it like best.pt). "
        "--format pt2: a torch.export program (<out>.pt2), an AOTInductor package compiled "
        "for --device (<stem>.aoti-<device>.pt2) and <stem>.card.json; both take crops "
        "[N, 3, S, S] in [0, 1] at the run's image size and need `import cprl_fast` before "
        "loading (docs in cprl_fast/export.py).",
    )
    p.add_argument("checkpoint", help="best.pt or last.pt of cprl-fast train")
    p.add_argument("--format", default="weights", choices=FORMATS,
                   help="weights or pt2 (default: weights)")  # fmt: skip
    p.add_argument(
        "--out",
        type=Path,
        help="file to write (default: beside the checkpoint, .safetensors or .pt2)",
    )
    p.add_argument("--device", default="cpu", help="device of the pt2 export (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-aoti", action="store_true",
                   help="pt2: skip the AOTInductor compile (about a minute on a CPU)")  # fmt: skip
    return p


def _export(args: argparse.Namespace) -> int:
    from cprl_fast.export import export_pt2, export_weights, pt2_paths
    from cprl_fast.io import check_output

    path = Path(args.checkpoint)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    suffix = ".safetensors" if args.format == "weights" else ".pt2"
    out = args.out or path.with_suffix(suffix)
    targets = [out] if args.format == "weights" else \
        list(pt2_paths(out, args.device, not args.no_aoti).values())  # fmt: skip
    check_output(out, args.overwrite, "--out", (suffix,))  # before any work
    for target in targets[1:]:
        check_output(target, args.overwrite, "--out")
    if args.format == "weights":
        written = [export_weights(path, out)]
    else:
        written = list(export_pt2(path, out, args.device, aoti=not args.no_aoti).values())
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0


def _certify_options(p) -> None:
    """--certify and --certify-n, as audit and study take them."""
    p.add_argument("--certify", default="", metavar="SIGMA[,SIGMA...]",
                   help="also certify by median smoothing at these noise levels (pixel units, "
                   "e.g. 0.12,0.25): smoothed SRCC, interval widths, certified SRCC")  # fmt: skip
    p.add_argument("--certify-n", type=int, default=1000,
                   help="noise draws per image for --certify (default: 1000)")  # fmt: skip


def _certify_sigmas(text: str, option: str = "--certify") -> list[float]:
    from cprl_fast.evaluate import parse_eps

    try:
        sigmas = [parse_eps(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sigmas = [-1.0]
    if any(v <= 0 for v in sigmas):
        raise UserError(f"{option} needs noise levels > 0 such as 0.12,0.25, got {text!r}")
    return sigmas


def _study_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.audit import DEFAULT_EPS
    from cprl_fast.presets import MODEL_PRESETS
    from cprl_fast.study import STUDY_ATTACKS

    eps = _eps_text(DEFAULT_EPS)
    p = sub.add_parser(
        "study",
        help="robustness study: models x scene-disjoint folds x seeds, each audited, summarised",
        description="Trains each model on every fold (--folds, scene-disjoint) and training "
        "seed, audits each on its fold's test images (the attack suite at every eps, the worst "
        "case, transfer from a sibling model, gradient-masking checks), and writes report.md/"
        "json and worst_vs_eps.png: means over the runs with 95% intervals and paired "
        "differences to the first model. Resumable: run the same command again.",
    )
    _protocol_options(p, out="reports/study", arch="resnet18", size=64, epochs=10, lr=3e-4,
                      eps=eps, dataset="builtin-v2")  # fmt: skip
    p.add_argument("--folds", type=int, default=3, help="scene-disjoint folds (default: 3)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default: 0,1)")
    p.add_argument("--models", default="resnet,ca,cprl,sat",
                   help=f"comma-separated, first is the reference; of {', '.join(MODEL_PRESETS)} "
                   "(default: resnet,ca,cprl,sat)")  # fmt: skip
    p.add_argument("--attack", default=",".join(STUDY_ATTACKS),
                   help=f"{_attack_help()} (default: {','.join(STUDY_ATTACKS)})")  # fmt: skip
    p.add_argument(
        "--per-scene",
        type=int,
        help="audit this many seeded images per test scene (default: every image)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and attack nothing: summarise the runs already finished",
    )
    _certify_options(p)
    return p


def _study(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.study import study
    from cprl_fast.train import TrainConfig

    eps = [parse_eps(e) for e in args.eps.split(",") if e.strip()]
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    base = TrainConfig(model_options={"arch": args.arch}, image_size=args.image_size,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       max_steps=args.max_steps, device=args.device)  # fmt: skip
    command = "cprl-fast " + " ".join(shlex.quote(a) for a in _COMMAND_LINE)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.certify_n < 1:
        raise UserError(f"--certify-n must be >= 1, got {args.certify_n}")
    study(args.dataset, args.root, args.out_dir, base, args.folds, seeds, models, eps,
          _attack_list(args.attack), args.per_scene, command, args.report_only,
          _certify_sigmas(args.certify), args.certify_n)  # fmt: skip
    print((args.out_dir / "report.md").read_text())
    print(f"report: {args.out_dir / 'report.md'}")
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "reproduce": _reproduce, "demo": _reproduce,
            "audit": _audit, "score": _score, "info": _info, "study": _study,
            "export": _export}  # fmt: skip


#: Commands that print which thread count they use (score, info and export print output that
#: other programs read).
LONG_COMMANDS = ("train", "evaluate", "reproduce", "demo", "audit", "study")

#: The arguments of the running command (a study records the command that made it).
_COMMAND_LINE: list[str] = []


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = _Parser(prog="cprl-fast",
                     description="Fast no-reference image quality assessment with CPRL: train, "
                     "attack, audit, certify, score and export quality models.")  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else at "
                        "most the cores this process may use, cgroup quota included)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _reproduce_parser(sub)
    _demo_parser(sub)
    _audit_parser(sub)
    _score_parser(sub)
    _info_parser(sub)
    _study_parser(sub)
    _export_parser(sub)
    args = parser.parse_args(argv)
    _COMMAND_LINE[:] = sys.argv[1:] if argv is None else list(argv)
    try:
        from cprl_fast.threads import set_threads

        note = set_threads(args.threads)
        if args.command in LONG_COMMANDS:  # the others print machine-readable output
            print(note, flush=True)
        return COMMANDS[args.command](args)
    except (UserError, ValueError, FileNotFoundError, OSError, TypeError, RuntimeError) as err:
        if args.debug:
            raise
        from cprl_fast.io import printable

        # the first line (split at newlines only: a name may hold a carriage return), escaped
        message = str(err).split("\n")[0] if str(err) else type(err).__name__
        print(f"cprl-fast {args.command}: {printable(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
