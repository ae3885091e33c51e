"""cprl-fast synthesize: a KADID-style quality dataset from a folder of pristine photographs."""

from __future__ import annotations

import argparse
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import UserError, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    kinds = load()["distortions"]
    p = sub.add_parser(
        "synthesize",
        help="make a quality dataset from your own photographs (distortions, pseudo-MOS)",
        description="Distorts each reference photograph (files, or folders searched "
        "recursively) by every chosen type at five levels and scores each image by its "
        "pseudo-MOS (MS-SSIM to its reference, min-max mapped to [0, 1]; not human opinion "
        "scores). Writes refs/, images/, scores.csv into OUT (a new folder), deterministic for "
        "any --workers. Train on it with --dataset synthetic --root OUT.",
    )
    p.add_argument("references", nargs="+", help="reference photographs or folders of them")
    p.add_argument("--out", type=Path, required=True, help="the dataset folder to create")
    p.add_argument("--distortions", default=",".join(kinds),
                   help=f"comma-separated types of {', '.join(kinds)} (default: all)")  # fmt: skip
    p.add_argument("--size", type=int, default=256,
                   help="side of every image after resizing and centre-cropping each reference, "
                   "px (default: 256)")  # fmt: skip
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes computing images (default: 1)")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from cprl_fast.data.synthetic import synthesize

    kinds = [k.strip() for k in args.distortions.split(",") if k.strip()]
    if args.out.exists():
        raise UserError(f"--out {args.out} already exists: name a new folder")
    out = synthesize(args.references, args.out, kinds, args.size, args.workers)
    print(f"wrote {out} (train on it: cprl-fast train --dataset synthetic --root {out})")
    return 0
