"""cprl-fast demo: the one-command demo, reproduce's protocol on the built-in data with two
models (a plain ResNet-18 and CPRL)."""

from __future__ import annotations

import argparse

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import add_protocol
from cprl_fast_cli.reproduce import run as run  # the same protocol


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="train CPRL and a plain ResNet on the built-in data, attack both, write a report",
        description="The one-command demo: trains a plain ResNet-18 and CPRL (ResNet-18 with CA "
        "modules, PNS game) from scratch on the built-in synthetic dataset with the native "
        "recipe (64 px crops at native resolution, local contrast normalisation, images "
        "scored by tiles), attacks both with FGSM, PGD and the rank-order attack at "
        "eps = 1/255 and over an eps sweep, prints a Table-1-style comparison and writes "
        "report.md, tables and figures to --out-dir. Point it at a real dataset with "
        "--dataset/--root and a GPU with --device cuda.",
    )
    add_protocol(p, out="reports/demo", arch="resnet18", size=64, lr=3e-4, recipe="native",
                 epochs={"resized": 8, "native": 100})  # fmt: skip
    p.set_defaults(attack=",".join(load()["suites"]["demo"]), demo=True)
    return p
