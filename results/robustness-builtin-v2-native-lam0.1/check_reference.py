"""How far the ResNet this study retrained is from the robustness study's, trained with the same
command, fold and seed on 2026-12-05: per run, its clean scores on the audited images against
the clean scores that study's ResNet audit recorded
(``../robustness-builtin-v2-native/runs/*/audit/resnet/report.json``). Prints the largest
absolute difference per run and both clean SRCCs, and writes nothing.

    python results/robustness-builtin-v2-native-lam0.1/check_reference.py   # from the root

Needs the run folders' models (``runs/*/models/resnet/last.pt``, not committed): run the
study's commands in README.md first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from spread import clean  # this folder's reader of the recorded ResNet audits

from cprl_fast import metrics
from cprl_fast.data.decoded import decoded_once
from cprl_fast.evaluate import predictions
from cprl_fast.study import audit_subset
from cprl_fast.train.runs import load_run_splits, load_trained

HERE = Path(__file__).resolve().parent


def main() -> int:
    settings = json.loads((HERE / "study.json").read_text())
    worst = 0.0
    for run in sorted((HERE / "runs").iterdir()):
        weights = run / "models" / "resnet" / "last.pt"
        if not weights.is_file():
            print(f"{run.name}: no retrained ResNet (models/resnet/last.pt)")
            continue
        trained = load_trained(weights)
        fold = trained.config.fold
        test = load_run_splits(trained.config, ("test",), from_card=True)["test"]
        tested = decoded_once(audit_subset(test, settings["per_scene"], seed=fold,
                                           crop=settings["audit_crop"]))  # fmt: skip
        scores, labels = predictions(trained.model, tested, None, 0.0,
                                     trained.config.batch_size)  # fmt: skip
        recorded, _, recorded_srcc = clean("2026-12-05", run.name)
        diff = float(np.max(np.abs(scores - recorded)))
        worst = max(worst, diff)
        print(f"{run.name}: {len(scores)} images, largest |retrained - recorded| clean score "
              f"{diff:.3g}; clean SRCC retrained {metrics.srcc(scores, labels):.3f}, recorded "
              f"{recorded_srcc:.3f}")
    print(f"largest difference over the runs: {worst:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
