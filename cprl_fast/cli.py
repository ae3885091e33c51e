"""The ``cprl-fast`` command.

    cprl-fast train --dataset builtin --arch resnet18 --epochs 2 --image-size 64 --out-dir runs/a
    cprl-fast train --config run.json --resume

Every option of :class:`cprl_fast.train.TrainConfig` is a flag (``--batch-size``, ``--lam``,
``--mode faithful|fast``, ...). ``--config`` reads a JSON or TOML file of the same names; flags
given on the command line override it. Unknown options and bad values stop at once with a
message that names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path

HELP = {
    "dataset": "live, vcl, livec, koniq or builtin (the synthetic one that needs no download)",
    "root": "folder the dataset was unpacked to (builtin: its cache folder)",
    "split_file": "JSON split to reuse (written there if missing)",
    "split_seed": "seed of the 4:1 scene-disjoint split",
    "arch": "resnet18, resnet34, resnet50 or resnet101",
    "placement": "CA placement: last (last block of each stage), all, or comma-separated blocks",
    "pretrained": "local state-dict file of the torchvision ResNet (ImageNet weights)",
    "model": "cprl (the PNS game) or resnet (plain regression baseline)",
    "b": "initial offset b of every CA module",
    "lam": "weight lambda of the intervention losses",
    "mode": "faithful (Algorithm 1's alternating order) or fast (one backward per iteration)",
    "clip_grad": "clip each group's gradient norm to this",
    "bf16": "bf16 autocast on CUDA",
    "freeze_bn": "BatchNorm uses running statistics while training",
    "max_steps": "stop after this many iterations",
    "out_dir": "folder for log.csv, last.pt, best.pt",
}


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
        return _arg_type(inner[0])
    return {bool: _parse_bool, int: int, float: float, str: str}.get(tp, str)


def _train_parser(sub) -> argparse.ArgumentParser:
    from cprl_fast.train import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a quality model (CPRL or the plain ResNet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="JSON or TOML file of options (flags override)")
    p.add_argument("--resume", action="store_true", help="continue exactly from out_dir/last.pt")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=_arg_type(hints[f.name]),
            default=None,
            help=f"{HELP.get(f.name, f.name)} (default: {f.default})",
        )
    return p


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"cprl-fast: config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except (ValueError, ImportError) as err:
        raise SystemExit(f"cprl-fast: cannot parse config file {path}: {err}") from None


def _train(args: argparse.Namespace) -> int:
    from cprl_fast.data import load_dataset
    from cprl_fast.train import TrainConfig, Trainer

    values = _read_config(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items()
                   if v is not None and k not in ("config", "resume", "command")})  # fmt: skip
    if isinstance(values.get("placement"), str) and "," in values["placement"]:
        values["placement"] = [s.strip() for s in values["placement"].split(",")]
    try:
        cfg = TrainConfig.from_dict(values)
        common = {
            "split_file": cfg.split_file,
            "seed": cfg.split_seed,
            "image_size": cfg.image_size,
        }
        train_set = load_dataset(cfg.dataset, cfg.root, split="train", **common)
        test_set = load_dataset(cfg.dataset, cfg.root, split="test", **common)
    except (ValueError, FileNotFoundError) as err:
        print(f"cprl-fast train: {err}", file=sys.stderr)
        return 2
    print(f"train: {train_set}, test: {test_set}; writing to {cfg.out_dir}")
    result = Trainer(cfg, train_set, test_set).fit(resume=args.resume)
    out = Path(cfg.out_dir)
    summary = {"test": result, "checkpoints": [str(out / "last.pt"), str(out / "best.pt")]}
    print(json.dumps(summary, indent=1))
    return 0


def _evaluate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="clean and attacked SRCC/PLCC/MSE of trained models (Tables 1, 2, 4; Figs 4-6)",
        description="Evaluates checkpoints clean and under attacks; writes results.md/.csv/.json "
        "(and with --figures fig4_landscape.png, fig5_channels.png, fig6_srcc_vs_eps.png).",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        required=True,
        help="a checkpoint written by cprl-fast train (repeat to compare models)",
    )
    p.add_argument(
        "--dataset", help="dataset name (default: the one the first model was trained on)"
    )
    p.add_argument("--root", help="dataset folder (default: the training run's)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"])
    p.add_argument("--attack", default="fgsm,pgd,reflect",
                   help="comma-separated: fgsm, pgd, reflect, reflect10, square")  # fmt: skip
    p.add_argument("--eps", default="1/255", help="L-infinity budget, e.g. 1/255 (the paper's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--figures", action="store_true", help="also draw Figs 4, 5 and 6")
    p.add_argument("--out-dir", type=Path, default=Path("reports/evaluate"))
    return p


def _protocol_options(p, out: str, arch: str, size: int, epochs: int, lr: float) -> None:
    """The options `reproduce` and `demo` share, with each command's defaults."""
    p.add_argument("--dataset", default="builtin")
    p.add_argument("--root")
    p.add_argument("--out-dir", type=Path, default=Path(out))
    p.add_argument("--eps", default="1/255")
    p.add_argument("--arch", default=arch)
    p.add_argument("--image-size", type=int, default=size)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--device", default="cpu")


def _attack_names(text: str) -> list[str]:
    from cprl_fast.evaluate import ATTACKS

    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; known: {', '.join(ATTACKS)}")
    return names


def _reproduce_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reproduce",
        help="the paper's protocol for one dataset: every model, attack, table and figure",
        description="Trains (or resumes) ResNet, CPRL, the b sweep and CA alone, attacks them, and "
        "writes report.md / report.json, tables/ and figures/ into --out-dir. Run it again to "
        "resume after an interruption.",
    )
    _protocol_options(p, out="reports/reproduce", arch="resnet50", size=320, epochs=10, lr=3e-5)
    p.add_argument("--attack", default="fgsm,pgd,reflect")
    p.add_argument(
        "--baselines",
        default="lwta,denoise,sat,nt,nima,dbcnn",
        help="comma-separated baselines to train beside ResNet and CPRL ('' for none)",
    )
    return p


def _demo_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="train CPRL and a plain ResNet on the built-in data, attack both, write a report",
        description="The one-command demo: trains a plain ResNet-18 and CPRL (ResNet-18 with CA "
        "modules, PNS game) on the built-in synthetic dataset (about two minutes on 2 CPU cores), "
        "attacks both with FGSM and PGD at eps = 1/255 and over an eps sweep, prints a "
        "Table-1-style comparison and writes report.md, tables and figures to --out-dir. Point "
        "it at a real dataset with --dataset/--root and a GPU with --device cuda.",
    )
    _protocol_options(p, out="reports/demo", arch="resnet18", size=64, epochs=8, lr=3e-4)
    p.set_defaults(attack="fgsm,pgd", demo=True)
    return p


def _reproduce(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.reproduce import reproduce
    from cprl_fast.train import TrainConfig

    try:
        eps = parse_eps(args.eps)
        names = _attack_names(args.attack)
        base = TrainConfig(arch=args.arch, image_size=args.image_size, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                           device=args.device)  # fmt: skip
        demo = getattr(args, "demo", False)
        baselines = [] if demo else [b.strip() for b in args.baselines.split(",") if b.strip()]
        reproduce(args.dataset, args.root, args.out_dir, base, eps, names, ablations=not demo,
                  baselines=baselines)  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        print(f"cprl-fast {args.command}: {err}", file=sys.stderr)
        return 2
    print((args.out_dir / "tables" / "main" / "results.md").read_text())
    print(
        "How to read this: 'clean' rows are the models on unmodified test images; 'fgsm' and "
        "'pgd' rows are the same images after an attack changing each pixel by at most eps. "
        "A robust model keeps its SRCC/PLCC high and its MSE and score_change low under attack; "
        "robustness is R of SPEC section 6 (higher is better)."
    )
    print(f"report: {args.out_dir / 'report.md'} (figures in {args.out_dir / 'figures'})")
    return 0


def load_trained(path: Path, device="cpu"):
    """(name, model, config) of a checkpoint written by ``cprl-fast train``."""
    from cprl_fast.train import TrainConfig, build_model
    from cprl_fast.train.checkpoint import load

    state = load(path, map_location=device)
    cfg = TrainConfig.from_dict({**json.loads(state["config"]), "pretrained": None})
    model = build_model(cfg).to(device)
    model.load_state_dict(state["model"])
    return f"{cfg.model}-{cfg.arch}", model.eval(), cfg


def _evaluate(args: argparse.Namespace) -> int:
    from cprl_fast.data import load_dataset
    from cprl_fast.evaluate import evaluate, parse_eps, write_report

    try:
        eps = parse_eps(args.eps)
        names = _attack_names(args.attack)
        models = {}
        for path in args.checkpoint:
            name, model, cfg = load_trained(path, args.device)
            models[name if name not in models else f"{name}-{len(models)}"] = (model, cfg)
        cfg0 = next(iter(models.values()))[1]
        dataset = load_dataset(args.dataset or cfg0.dataset, args.root or cfg0.root,
                               split=args.split, split_file=cfg0.split_file, seed=cfg0.split_seed,
                               image_size=cfg0.image_size)  # fmt: skip
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"cprl-fast evaluate: {err}", file=sys.stderr)
        return 2
    results = {
        name: evaluate(model, dataset, names, eps, args.batch_size, args.device)
        for name, (model, _) in models.items()
    }
    paths = write_report(results, args.out_dir, f"{dataset.name} {args.split}, eps = {args.eps}")
    if args.figures:
        from cprl_fast import figures

        plain = {n: m for n, (m, _) in models.items()}
        x = dataset[0][0][None].to(args.device)
        figures.score_landscape(plain, x, args.out_dir / "fig4_landscape.png")
        batch = torch_stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(args.device)
        figures.channel_activations({n: (m, figures.default_layer(m)) for n, m in plain.items()},
                                    batch, args.out_dir / "fig5_channels.png")  # fmt: skip
        figures.srcc_vs_eps(plain, dataset, args.out_dir / "fig6_srcc_vs_eps.png",
                            batch_size=args.batch_size, device=args.device)  # fmt: skip
    print((args.out_dir / "results.md").read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def torch_stack(tensors):
    import torch

    return torch.stack(tensors)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="cprl-fast", description="Fast, robust NR-IQA (CPRL).")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _reproduce_parser(sub)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    commands = {"train": _train, "evaluate": _evaluate, "reproduce": _reproduce, "demo": _reproduce}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
