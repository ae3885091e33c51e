"""CPRL with the paper's lambda = 1 against lambda = 0.1 on builtin-v2: clean SRCC on each
run's whole test split (250 images, 5 held-out scenes) with 95% bootstrap intervals, the paired
difference per run (the same images), the mean over the runs, and the intervention losses at
the end of training. Writes compare.json, table.md and srcc_per_run.png here and copies each
run's log.csv to logs/ (the run folders, with the models, are not committed).

    python results/cprl-lambda-builtin-v2/compare.py      # from the repository root

The models: runs/fold{k}-seed{s}/models/{cprl,cprl-lam0.1}/last.pt (README.md has the
commands); with ``--context``, also the certified study's seed-0 ResNet and CA-alone models.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from cprl_fast import metrics
from cprl_fast.evaluate import predictions
from cprl_fast.reports import interval
from cprl_fast.train.runs import load_run_splits, load_trained

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "certified-builtin-v2-native" / "runs"
MODELS = {"cprl": "CPRL, lambda 1 (the paper's)", "cprl-lam0.1": "CPRL, lambda 0.1"}
CONTEXT = {"resnet": "ResNet (certified study)", "ca": "CA alone (certified study)"}
LAST_STEPS = 60  #: the intervention losses are averaged over the last 60 steps of a run


def end_losses(log: Path) -> dict[str, float]:
    """Mean l_reg, l_sf and l_nc over the last LAST_STEPS steps of a training log."""
    rows = list(csv.DictReader(log.open()))[-LAST_STEPS:]
    out = {}
    for key in ("l_reg", "l_sf", "l_nc"):
        values = [float(r[key]) for r in rows if r.get(key)]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def plot(data: dict, path: Path) -> None:
    """Per run, the two CPRL models' clean SRCC with their intervals, joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (name, colour) in enumerate((("cprl", "tab:red"), ("cprl-lam0.1", "tab:blue"))):
        rows = data["runs"][name]
        x = np.arange(len(rows)) + (i - 0.5) * 0.16
        y = [r["srcc"] for r in rows]
        err = np.array([[r["srcc"] - r["ci"][0], r["ci"][1] - r["srcc"]] for r in rows]).T
        ax.errorbar(x, y, yerr=err, fmt="o", color=colour, capsize=3, label=MODELS[name])
    for j, (a, b) in enumerate(zip(data["runs"]["cprl"], data["runs"]["cprl-lam0.1"],
                                   strict=True)):  # fmt: skip
        ax.plot([j - 0.08, j + 0.08], [a["srcc"], b["srcc"]], color="grey", lw=0.8)
    ax.set_xticks(range(len(data["runs"]["cprl"])),
                  [r["run"] for r in data["runs"]["cprl"]], fontsize=8)  # fmt: skip
    ax.set_ylabel("clean SRCC, 250 held-out images")
    ax.set_ylim(-0.1, 0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("CPRL on builtin-v2: lambda 1 against 0.1, per run (95% bootstrap)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(data: dict) -> None:
    """table.md and srcc_per_run.png from compare.json's ``data``; prints the table."""
    results, summary, diffs = data["runs"], data["mean"], data["lambda_0.1_minus_1"]
    runs = sorted({r["run"] for rows in results.values() for r in rows})
    labels = {**MODELS, **CONTEXT}
    lines = ["| run | " + " | ".join(labels[n] for n in results) + " |",
             "| --- |" + " ---: |" * len(results)]  # fmt: skip
    for run in runs:
        found = {n: next((r for r in results[n] if r["run"] == run), None) for n in results}
        cells = ["-" if r is None else interval(r["srcc"], r["ci"]) for r in found.values()]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines.append("| mean [95% t over the runs] | " + " | ".join(
        f"{interval(summary[n]['mean'], summary[n]['ci'])} (n={summary[n]['n']})"
        for n in results) + " |")  # fmt: skip
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    plot(data, HERE / "srcc_per_run.png")
    print("\n".join(lines))
    print(f"lambda 0.1 - lambda 1, mean over runs: "
          f"{interval(diffs['mean'], diffs['ci'], signed=True)} (n={diffs['n']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", action="store_true", help="add the study's ResNet and CA")
    p.add_argument("--from-json", action="store_true", help="rewrite table.md and "
                   "srcc_per_run.png from compare.json (no model needed)")  # fmt: skip
    args = p.parse_args()
    if args.from_json:
        write_outputs(json.loads((HERE / "compare.json").read_text()))
        return
    torch.set_num_threads(2)
    (HERE / "logs").mkdir(exist_ok=True)
    results: dict[str, list[dict]] = {}
    for run in sorted(d for d in (HERE / "runs").iterdir() if d.is_dir()):
        folders = {n: run / "models" / n for n in MODELS}
        if args.context and run.name.endswith("seed0"):
            folders.update({n: STUDY / run.name / "models" / n for n in CONTEXT})
        preds = {}
        for name, folder in folders.items():
            trained = load_trained(folder / "last.pt")
            test = load_run_splits(trained.config, ("test",), from_card=True)["test"]
            preds[name], y = predictions(trained.model, test, None, 0.0, 32)
        for name, pred in preds.items():
            row = {"run": run.name, "srcc": metrics.srcc(pred, y),
                   "ci": list(metrics.confidence_interval(pred, y, "srcc")),
                   "vs_lambda_1": metrics.paired_difference(pred, preds["cprl"], y, "srcc")}
            if name in MODELS:
                shutil.copy(folders[name] / "log.csv", HERE / "logs" / f"{run.name}-{name}.csv")
                row["end_losses"] = end_losses(folders[name] / "log.csv")
            results.setdefault(name, []).append(row)
            print(run.name, name, f"{row['srcc']:.3f}", flush=True)
    summary = {n: metrics.mean_interval([r["srcc"] for r in rs], bounds=(-1.0, 1.0))
               for n, rs in results.items()}
    diffs = metrics.mean_interval([r["vs_lambda_1"]["difference"]
                                   for r in results["cprl-lam0.1"]], bounds=(-2.0, 2.0))
    data = {"runs": results, "mean": summary, "lambda_0.1_minus_1": diffs}
    (HERE / "compare.json").write_text(json.dumps(data, indent=1) + "\n")
    write_outputs(data)


if __name__ == "__main__":
    main()
