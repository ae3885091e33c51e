"""Clean SRCC of ResNets trained by ``retrain_resnet.py`` on their fold's whole test split (250
images of 5 held-out scenes, each scored whole: 16 tiles of 64 px), where the audit scored only
20 central crops: enough images to see whether a training setting (another CPU's kernels) moves
a model's quality one way. Prints one line per OUT folder with the fold and seed, the machine the
checkpoint's card records, and the SRCC with its 95% bootstrap interval over the images; then,
for each run given twice (two settings), the second's SRCC minus the first's on the same images
with a paired bootstrap interval. Writes nothing.

    python results/robustness-builtin-v2-native-lam0.1/score_test_split.py OUT [OUT ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from cprl_fast import metrics
from cprl_fast.data.decoded import decoded_once
from cprl_fast.evaluate import predictions
from cprl_fast.train.runs import load_run_splits, load_trained, model_card


def main(outs: list[Path]) -> int:
    torch.set_num_threads(1)
    by_run: dict[str, list[np.ndarray]] = {}
    labels_of: dict[str, np.ndarray] = {}
    for out in outs:
        weights = out / "run" / "models" / "resnet" / "last.pt"
        trained = load_trained(weights)
        cfg = trained.config
        test = decoded_once(load_run_splits(cfg, ("test",), from_card=True)["test"])
        scores, labels = predictions(trained.model, test, None, 0.0, cfg.batch_size)
        scores, labels = np.asarray(scores), np.asarray(labels)
        ci = metrics.confidence_interval(scores, labels)
        machine = json.dumps(model_card(weights).get("machine") or "not recorded")
        run = f"fold{cfg.fold}-seed{cfg.seed}"
        print(f"{out.name}: {run}, {len(scores)} images, SRCC {metrics.srcc(scores, labels):.4f} "
              f"[{ci[0]:.3f}, {ci[1]:.3f}]; machine {machine}", flush=True)
        by_run.setdefault(run, []).append(scores)
        labels_of[run] = labels
    for run, pair in by_run.items():
        if len(pair) == 2:
            d = metrics.paired_difference(pair[1], pair[0], labels_of[run])
            print(f"{run}: second minus first {d['difference']:+.4f} "
                  f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: score_test_split.py OUT [OUT ...] (folders retrain_resnet.py wrote)")
    raise SystemExit(main([Path(a) for a in sys.argv[1:]]))
