"""How far apart two trainings of the plain ResNet score the same 20 images, from the committed
audits alone: the same run (fold, seed, command) on the two days' machines (the robustness
study's audits of 2026-12-05 against this folder's of 2026-12-07), beside the two seeds of one
fold on one machine (the same images: a run's audited images depend on its fold only). Prints
the largest and mean absolute difference of the clean scores and both clean SRCCs; writes
nothing, trains nothing.

    python results/robustness-builtin-v2-native-lam0.1/spread.py   # from the root
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cprl_fast.io import read_json
from cprl_fast.reports import AuditReport

HERE = Path(__file__).resolve().parent
DAYS = {"2026-12-05": HERE.parent / "robustness-builtin-v2-native", "2026-12-07": HERE}


def clean(day: str, run: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The clean scores, labels and SRCC of ``run``'s ResNet audit of ``day``."""
    path = DAYS[day] / "runs" / run / "audit" / "resnet" / "report.json"
    metrics = AuditReport.from_json(read_json(path, "audit report"), path).clean
    return np.asarray(metrics["scores"]), np.asarray(metrics["labels"]), float(metrics["srcc"])


def line(what: str, a: tuple, b: tuple) -> str:
    if not np.array_equal(a[1], b[1]):
        raise SystemExit(f"{what}: the two audits scored other images")
    d = np.abs(a[0] - b[0])
    return f"{what}: largest {d.max():.3f}, mean {d.mean():.3f}; SRCC {a[2]:.3f} / {b[2]:.3f}"


def main() -> int:
    first, second = DAYS
    for fold in range(3):
        runs = [f"fold{fold}-seed{seed}" for seed in (0, 1)]
        for run in runs:
            print(line(f"{run}, {first} / {second}", clean(first, run), clean(second, run)))
        for day in DAYS:
            print(line(f"fold{fold}, seed 0 / seed 1, {day}", clean(day, runs[0]),
                       clean(day, runs[1])))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
