"""cprl-fast reproduce: the paper's protocol for one dataset (every model, attack, table and
figure); its ending is the demo's too."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import add_attack, add_protocol, attack_list, protocol_config


def add_parser(sub) -> argparse.ArgumentParser:
    baselines = ",".join(load()["baselines"])
    p = sub.add_parser(
        "reproduce",
        help="the paper's protocol for one dataset: every model, attack, table and figure",
        description="Trains (or resumes) ResNet, CPRL, the b sweep and CA alone, attacks them, and "
        "writes report.md / report.json, tables/ and figures/ into --out-dir. Run it again to "
        "resume after an interruption.",
    )
    add_protocol(p, out="reports/reproduce", arch="resnet50", size=320, lr=3e-5,
                 epochs={"resized": 10, "native": 100})  # fmt: skip
    add_attack(p, load()["suites"]["protocol"])
    p.add_argument("--baselines", default=baselines,
                   help="comma-separated models to train beside ResNet and CPRL ('' for none; "
                   f"default: {baselines})")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.models import MODELS
    from cprl_fast.reproduce import reproduce

    start = time.perf_counter()
    eps = parse_eps(args.eps)
    names = attack_list(args.attack)
    demo = getattr(args, "demo", False)
    baselines = [] if demo else [b.strip() for b in args.baselines.split(",") if b.strip()]
    for name in baselines:
        MODELS.check(name)
    reproduce(args.dataset, args.root, args.out_dir, protocol_config(args), eps, names,
              ablations=not demo, baselines=baselines)  # fmt: skip
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
    print(next_steps(args.out_dir))
    print(f"{args.command} took {time.perf_counter() - start:.0f} s (wall time)")
    return 0


def next_steps(out_dir: Path) -> str:
    """Where the protocol's models are, and three commands to try on them (the demo's ending)."""
    models = sorted(p for p in (out_dir / "models").glob("*/best.pt"))
    if not models:
        return ""
    chosen = models[0]  # the first by name (the demo's: cprl, then resnet)
    q = shlex.quote
    curves = [p.parent / "curves.png" for p in models if (p.parent / "curves.png").is_file()]
    return "\n".join([
        "models: " + ", ".join(str(p) for p in models),
        *(["training curves: " + ", ".join(str(p) for p in curves)] if curves else []),
        f"next, for example on {chosen.parent.name}'s:",
        f"  cprl-fast score --model {q(str(chosen))} PHOTO.png   (a file or a folder of images)",
        f"  cprl-fast audit --checkpoint {q(str(chosen))} --out-dir "
        f"{q(str(out_dir / 'audit'))}",
        f"  cprl-fast export {q(str(chosen))} --format pt2",
    ])  # fmt: skip
