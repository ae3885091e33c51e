"""cprl-fast study: models x scene-disjoint folds x seeds, each audited, summarised."""

from __future__ import annotations

import argparse
import shlex

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import (
    UserError,
    add_attack,
    add_certify,
    add_protocol,
    attack_list,
    certify_sigmas,
    protocol_config,
)


def add_parser(sub) -> argparse.ArgumentParser:
    listing = load()
    eps = listing["audit_eps"]
    p = sub.add_parser(
        "study",
        help="robustness study: models x scene-disjoint folds x seeds, each audited, summarised",
        description="Trains each model on every fold (--folds, scene-disjoint) and training "
        "seed, audits each on its fold's test images (the attack suite at every eps, the worst "
        "case, transfer from a sibling model, gradient-masking checks), and writes report.md/"
        "json and worst_vs_eps.png: means over the runs with 95% intervals and paired "
        "differences to the first model. Resumable: run the same command again.",
    )
    add_protocol(p, out="reports/study", arch="resnet18", size=64, lr=3e-4, eps=eps,
                 dataset="builtin-v2", recipe="native",
                 epochs={"resized": 10, "native": 50})  # fmt: skip
    p.add_argument("--folds", type=int, default=3, help="scene-disjoint folds (default: 3)")
    p.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default: 0,1)")
    p.add_argument("--models", default="resnet,ca,cprl,sat",
                   help="comma-separated, first is the reference; of "
                   f"{', '.join(listing['model_presets'])} "
                   "(default: resnet,ca,cprl,sat)")  # fmt: skip
    add_attack(p, listing["suites"]["study"])
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
    add_certify(p)
    return p


def run(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.study import study

    eps = [parse_eps(e) for e in args.eps.split(",") if e.strip()]
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    command = "cprl-fast " + " ".join(shlex.quote(a) for a in args.command_line)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.certify_n < 1:
        raise UserError(f"--certify-n must be >= 1, got {args.certify_n}")
    study(args.dataset, args.root, args.out_dir, protocol_config(args), args.folds, seeds,
          models, eps, attack_list(args.attack), args.per_scene, command, args.report_only,
          certify_sigmas(args.certify), args.certify_n)  # fmt: skip
    print((args.out_dir / "report.md").read_text())
    print(f"report: {args.out_dir / 'report.md'}")
    return 0
