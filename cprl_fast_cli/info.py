"""cprl-fast info: print a checkpoint's model card, or without one what this installation runs
with (:func:`cprl_fast.installation.environment`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="print a checkpoint's model card, or what this installation runs with",
        description="Prints what produced a checkpoint of cprl-fast train: model and options, "
        "objective, dataset and split identity, image size, steps, validation SRCC, thread "
        "count, library versions and the machine it trained on (JSON with --json). Without a "
        "checkpoint: what this installation runs with (versions of cprl_fast, torch, Python and "
        "Triton, the torch the extension was built for, its CUDA kernels, the GPU and CPU, the "
        "backend), for a bug report.",
    )
    p.add_argument("checkpoint", nargs="?", help="best.pt or last.pt of a run")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        from cprl_fast.installation import environment

        card = environment()
    else:
        from cprl_fast.train.runs import model_card

        card = model_card(Path(args.checkpoint))
    if args.json:
        from cprl_fast.io import json_text

        print(json_text(card), end="")
        return 0
    from cprl_fast.io import printable

    for key, value in card.items():  # a card is data from a file: control characters escaped
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        print(f"{key:>18}: {printable(text)}")
    return 0
