"""Is the ResNet's drift between the two sessions the code's or the machine's? Trains one run's
ResNet (RUN, default fold0-seed0) as the robustness study does (the same command's settings and
split file, one thread), scores the run's 20 audited images and prints their clean SRCC and the
largest difference from the clean scores each recorded ResNet audit of that run holds: the
robustness study's (2026-12-05) and this folder's (2026-12-07). Writes only under OUT (the
model and ``scores.npy``); about 3 minutes here.

    python results/robustness-builtin-v2-native-lam0.1/retrain_resnet.py OUT [RUN]  # from the root

Run it with whichever cprl_fast is imported first: to train with the code of the robustness
study's commit (306b704), build that commit in a worktree and put it first on the path
(README.md, "Two sessions"). Environment variables that cap the CPU kernels' instruction sets
(``ONEDNN_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``) are read by torch at start-up.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from spread import DAYS, clean  # this folder's reader of the recorded ResNet audits

import cprl_fast
from cprl_fast import metrics
from cprl_fast.evaluate import predictions
from cprl_fast.presets import preset_config
from cprl_fast.reproduce import train_model
from cprl_fast.study import audit_subset
from cprl_fast.train.runs import load_run_splits
from cprl_fast_cli import parser
from cprl_fast_cli.options import protocol_config

HERE = Path(__file__).resolve().parent
RUN = re.compile(r"fold([0-2])-seed([01])")


def main(out: Path, run: str) -> int:
    fold, seed = (int(v) for v in RUN.fullmatch(run).groups())
    torch.set_num_threads(1)
    print(f"cprl_fast from {Path(cprl_fast.__file__).parent}, torch {torch.__version__}, "
          f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    split = out / "splits" / f"fold{fold}.json"
    shutil.copy(HERE / "splits" / split.name, split)
    args = parser().parse_args([
        "--threads", "1", "study", "--recipe", "native", "--dataset", "builtin-v2",
        "--folds", "3", "--seeds", str(seed), "--models", "resnet,cprl-lam0.1", "--epochs", "20",
        "--per-scene", "4", "--audit-crop", "128", "--out-dir", str(out),
    ])  # fmt: skip
    cfg = dataclasses.replace(protocol_config(args), dataset="builtin-v2", root=None, folds=3,
                              fold=fold, seed=seed, split_file=str(split))
    splits = load_run_splits(cfg, ("train", "val", "test"))
    tested = audit_subset(splits["test"], 4, seed=fold, crop=128)
    start = time.perf_counter()
    model = train_model("resnet", preset_config("resnet", cfg), splits["train"], splits["val"],
                        out / "run")  # fmt: skip
    print(f"trained in {time.perf_counter() - start:.0f} s")
    scores, labels = predictions(model, tested, None, 0.0, cfg.batch_size)
    scores = np.asarray(scores, dtype=np.float64)
    np.save(out / "scores.npy", scores)
    print(f"{run}: clean SRCC of the {len(scores)} images: {metrics.srcc(scores, labels):.4f}")
    for day in DAYS:
        diff = float(np.max(np.abs(scores - clean(day, run)[0])))
        print(f"largest |scores - {day}'s recorded clean scores|: {diff:.3g}")
    return 0


if __name__ == "__main__":
    chosen = sys.argv[2] if len(sys.argv) == 3 else "fold0-seed0"
    if len(sys.argv) not in (2, 3) or not RUN.fullmatch(chosen):
        sys.exit("usage: retrain_resnet.py OUT [RUN] (OUT: a folder for the model and "
                 "scores.npy; RUN: fold0-seed0 to fold2-seed1, default fold0-seed0)")
    raise SystemExit(main(Path(sys.argv[1]), chosen))
