"""cprl-fast score: score image files and folders with a trained model, as CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from cprl_fast_cli.catalog import load
from cprl_fast_cli.options import UserError, add_batch_and_device, add_overwrite, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    max_pixels = load()["max_pixels"]
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
    add_overwrite(p, "an existing --out file")
    p.add_argument("--max-pixels", type=int, default=max_pixels,
                   help="per-image pixel limit: larger images are failures, read no further "
                   f"than their header (default: {max_pixels} = 8192 x 8192)")  # fmt: skip
    add_batch_and_device(p)
    p.add_argument("--workers", type=positive_int, default=None,
                   help="threads that decode and resize images while the model scores (default: "
                   "the CPU cores, at most 4; the scores are the same for any number)")  # fmt: skip
    return p


def score_cell(score: float) -> str:
    """A score as the shortest decimal that reads back as the same number: of its float32
    value where it is one (a model's output), else of the float; never rounded into ties
    with its neighbours (6 decimals made 91 of 10,000 sigmoid scores tie)."""
    import numpy as np

    if float(np.float32(score)) == score:
        return np.format_float_positional(np.float32(score), unique=True, trim="0")
    return repr(score)


def run(args: argparse.Namespace) -> int:
    from cprl_fast.checks import check_device
    from cprl_fast.images import check_max_pixels, image_suffixes
    from cprl_fast.io import check_output, csv_cell, json_text, printable, write_text_atomic
    from cprl_fast.score import image_files, load_model

    check_device(args.device)
    check_max_pixels(args.max_pixels, "--max-pixels")
    if args.out is not None:  # checked before any work
        check_output(args.out, args.overwrite, "--out", (".csv", ".json"))
    files = image_files(args.paths)  # a missing path is an error before any work
    if not files:  # only folders were given, with no image file in them
        raise UserError(f"no image files ({', '.join(image_suffixes())}) in "
                        f"{', '.join(printable(p) for p in args.paths)}")  # fmt: skip
    metric = load_model(args.model, args.device, args.batch_size, max_pixels=args.max_pixels,
                        workers=args.workers)  # fmt: skip
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
            w.writerow([csv_cell(r["path"]), "" if r["score"] is None else score_cell(r["score"]),
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
