"""cprl-fast export: a trained model as model-only safetensors, or torch.export +
AOTInductor."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import UserError, add_device, add_overwrite


def add_parser(sub) -> argparse.ArgumentParser:
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
    p.add_argument("--format", default="weights", choices=load()["export_formats"],
                   help="weights or pt2 (default: weights)")  # fmt: skip
    p.add_argument(
        "--out",
        type=Path,
        help="file to write (default: beside the checkpoint, .safetensors or .pt2)",
    )
    add_device(p, ": the pt2 export's (its AOTInductor package runs there)")
    add_overwrite(p, "existing output files")
    p.add_argument("--no-aoti", action="store_true",
                   help="pt2: skip the AOTInductor compile (about a minute on a CPU)")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from cprl_fast.export import check_aoti_torch, export_pt2, export_weights, pt2_paths
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
    if args.format == "pt2" and not args.no_aoti:
        check_aoti_torch()
    if args.format == "weights":
        written = [export_weights(path, out)]
    else:
        package = "" if args.no_aoti else (f", then compiling its AOTInductor package for "
                                           f"{args.device} (about a minute on a CPU)")  # fmt: skip
        print(f"export: tracing {path} with torch.export{package}", file=sys.stderr, flush=True)
        written = list(export_pt2(path, out, args.device, aoti=not args.no_aoti).values())
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")
    return 0
