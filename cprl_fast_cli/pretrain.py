"""cprl-fast pretrain: quality-aware pretraining without a download (ranking distortion
strengths of crops of pristine photographs), written as a weights file --pretrained takes."""

from __future__ import annotations

import argparse
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import (
    OPTION_HELP,
    RUN_HELP,
    UserError,
    add_dataset,
    add_device,
    add_overwrite,
    add_root,
)


def add_parser(sub) -> argparse.ArgumentParser:
    kinds, default = load()["distortions"], load()["ranking_distortions"]
    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone by ranking distortions of your photographs (no labels)",
        description="Trains the plain quality ResNet from random weights to rank versions of "
        "the same crop of a pristine photograph by how strongly one distortion type was "
        "applied (RankIQA's idea; no quality score is used), then writes its backbone's "
        "weights to OUT. Train from them with cprl-fast train --pretrained OUT and the same "
        "--arch and --input-norm (for example with --recipe native, whose input norm is lcn). "
        "Pretrain on the training scenes only: a test scene's photograph must not be among "
        "the references.",
    )
    p.add_argument("references", nargs="*",
                   help="pristine photographs or folders of them (or --dataset)")  # fmt: skip
    split = p.add_argument_group(
        "the training scenes of a dataset, instead of REFERENCES",
        "the refs/<scene>.png of the scenes on the training side of the split that cprl-fast "
        "train makes with the same --dataset, --folds, --fold and --split-seed (a dataset "
        "written by cprl-fast synthesize: builtin, builtin-v2, synthetic)",
    )  # fmt: skip
    add_dataset(split, None, "dataset whose training scenes' references to rank")
    add_root(split)
    split.add_argument("--folds", type=int, help=RUN_HELP["folds"] + " (default: the 4:1 split)")
    split.add_argument("--fold", type=int, default=0, help=RUN_HELP["fold"] + " (default: 0)")
    split.add_argument("--split-seed", type=int, default=0,
                       help=RUN_HELP["split_seed"] + " (default: 0)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the weights file to write (.pt)")
    p.add_argument("--log-dir", type=Path,
                   help="folder for log.csv (the hinge of every step) and curves.png (the "
                   "hinge against the step); default: no log")  # fmt: skip
    add_overwrite(p, "--out (and --log-dir's log.csv and curves.png) if they exist")
    p.add_argument("--arch", default="resnet18", help=OPTION_HELP["arch"])
    p.add_argument("--input-norm", default="lcn", choices=("imagenet", "lcn"),
                   help=OPTION_HELP["input_norm"] + " (default: lcn)")  # fmt: skip
    p.add_argument("--steps", type=int, default=300, help="optimiser steps (default: 300)")
    p.add_argument("--crops", type=int, default=8,
                   help="reference crops per step, each as 5 versions (default: 8)")  # fmt: skip
    p.add_argument("--crop", type=int, default=64,
                   help="crop side, pixels: the --train-crop you will train with (default: 64)")
    p.add_argument("--distortions", default=",".join(default),
                   help=f"comma-separated types of {', '.join(kinds)} (default: builtin-v2's "
                   f"{len(default)}, {', '.join(default)})")  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak of the one-cycle learning rate (default: 0.001)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of weights, crops and distortions")
    add_device(p, " (the model trains there; the crops are drawn on the CPU)")
    return p


def run(args: argparse.Namespace) -> int:
    from cprl_fast.checks import check_device
    from cprl_fast.io import check_output
    from cprl_fast.train.logs import LOG_EVERY
    from cprl_fast.train.ranking import LOG_FILES, RankingConfig, pretrain_by_ranking

    kinds = tuple(k.strip() for k in args.distortions.split(",") if k.strip())
    try:
        cfg = RankingConfig(arch=args.arch, input_norm=args.input_norm, steps=args.steps,
                            crops=args.crops, crop=args.crop, kinds=kinds, lr=args.lr,
                            seed=args.seed)  # fmt: skip
    except ValueError as err:  # "<field> must ...": name the option instead
        field, rest = str(err).split(" ", 1)
        option = {"kinds": "distortions"}.get(field, field).replace("_", "-")
        raise UserError(f"--{option} {rest}") from None
    check_device(args.device)
    check_output(args.out, args.overwrite, "--out", (".pt", ".pth"))
    if args.log_dir is not None:
        for name in LOG_FILES:
            check_output(args.log_dir / name, args.overwrite, "--log-dir")
    references, source = _references(args)
    result = pretrain_by_ranking(references, args.out, cfg, device=args.device,
                                 log_dir=args.log_dir, source=source)  # fmt: skip
    k = min(LOG_EVERY, cfg.steps)
    print(f"wrote {result.path} ({cfg.steps} steps in {result.seconds:.0f} s; mean hinge "
          f"{result.mean_hinge(k):.4f} over the first {k} steps, "
          f"{result.mean_hinge(k, last=True):.4f} over the last {k}"
          f"{f'; curves: {result.curves}' if result.curves else ''}); train from it: cprl-fast "
          f"train --pretrained {result.path} --arch {cfg.arch} --input-norm {cfg.input_norm}")
    return 0


def _references(args: argparse.Namespace) -> tuple[list, object]:
    """REFERENCES, or the training scenes' references of --dataset's split (val_ratio 0: every
    scene but the test side's, as --recipe native trains) with their source (a
    :class:`~cprl_fast.train.ranking.PretrainingSource`, recorded in the weights file; None
    for REFERENCES)."""
    if bool(args.references) == bool(args.dataset):
        raise UserError("give the pristine photographs (REFERENCES) or --dataset, one of the two")
    if not args.dataset:
        return args.references, None
    from cprl_fast.data import load_splits
    from cprl_fast.data.synthetic import scene_references
    from cprl_fast.train.ranking import PretrainingSource

    train = load_splits(args.dataset, args.root, ("train",), seed=args.split_seed, val_ratio=0.0,
                        folds=args.folds, fold=args.fold)["train"]  # fmt: skip
    source = PretrainingSource(args.dataset, train.split_info["score_sha256"],
                               tuple(sorted({it.scene for it in train.items})))  # fmt: skip
    return scene_references(train.items), source
