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
        "--audit-crop",
        type=int,
        metavar="PX",
        help="attack and score each audited image as its central PX x PX crop, a cheaper "
        "audit (128 of a 256 px image: a quarter of the pixels; default: the whole image)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train and attack nothing: summarise the runs already finished",
    )
    p.add_argument(
        "--share",
        default="0/1",
        metavar="K/N",
        help="do runs K, K+N, K+2N, ... of the study only, so N processes (one per GPU or "
        "core, or machines sharing --out-dir) split it; each writes the summary of every run "
        "the folder has finished (default: 0/1, every run)",
    )
    add_certify(p)
    return p


def without_share(argv: list[str]) -> list[str]:
    """The command line less its --share: the study's command, the same for every share."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--share="):
            skip = False
            continue
        skip = a == "--share"
        if not skip:
            out.append(a)
    return out


def parse_share(text: str) -> tuple[int, int]:
    """--share's K/N as ``(k, n)``; UserError naming the option otherwise."""
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 0 <= int(k) < int(n):
        raise UserError(f"--share must be K/N with 0 <= K < N (e.g. 0/2), got {text!r}")
    return int(k), int(n)


def run(args: argparse.Namespace) -> int:
    from cprl_fast.evaluate import parse_eps
    from cprl_fast.study import study

    eps = [parse_eps(e) for e in args.eps.split(",") if e.strip()]
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    command = "cprl-fast " + " ".join(shlex.quote(a) for a in without_share(args.command_line))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    share = parse_share(args.share)
    attacks = attack_list(args.attack, source=True)  # each model's source: another of them
    report = study(args.dataset, args.root, args.out_dir, protocol_config(args), args.folds,
                   seeds, models, eps, attacks, args.per_scene, command,
                   args.report_only, certify_sigmas(args.certify), args.certify_n, share,
                   args.audit_crop)
    if not report:
        print(f"share {args.share} done; {args.out_dir} has fewer than 2 finished runs, so no "
              "summary yet (the other shares write it)")
        return 0
    print((args.out_dir / "report.md").read_text())
    print(f"report: {args.out_dir / 'report.md'}")
    return 0
