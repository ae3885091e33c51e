"""Clean and attacked evaluation of quality models, as in the paper's Tables 1, 2 and 4.

:func:`evaluate` runs a model over a dataset, clean and under each attack at budget ``eps``
(the attack targets are the labels, loss ``(h(x') - y)^2``; score reflection uses ``sign(y -
0.5)``), and returns per condition SRCC, PLCC, KRCC, MSE, RMSE, the mean score change ``|s' - s|``
and the robustness score ``R`` (docs/maths.md §6). :func:`write_report` writes it as JSON, CSV and a
markdown table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cprl_fast import attacks, metrics
from cprl_fast.attacks.common import eval_mode
from cprl_fast.checks import check_eps
from cprl_fast.io import write_json_atomic, write_text_atomic


def parse_eps(text: str | float) -> float:
    """``"1/255"``, ``"0.004"`` or a number -> float, checked (finite, ``>= 0``) before any work
    is done with it."""
    if isinstance(text, (int, float)):
        eps = float(text)
    else:
        try:
            eps = float(Fraction(text.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"eps must be a number or a fraction like 1/255, got {text!r}"
            ) from None
    check_eps(eps)
    return eps


def _condition(clean: np.ndarray, pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    out = metrics.evaluate_scores(pred, y)
    out["score_change"] = float(metrics.score_change(clean, pred).mean())
    out["robustness"] = metrics.robustness(clean, pred)
    return out


def predictions(model: nn.Module, dataset, attack: str | None, eps: float, batch_size: int = 16,
                device="cpu", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Scores of ``model`` on ``dataset`` (attacked by ``attack`` at ``eps`` when given) and the
    labels, in dataset order."""
    if attack is not None:
        attacks.check_attack_names([attack])
    check_eps(eps)
    g = torch.Generator().manual_seed(seed)
    preds, labels = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    with eval_mode(model):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if attack is not None and eps > 0:
                x = attacks.run_attack(attack, model, x, y, eps, g)
            with torch.no_grad():
                preds.append(model(x).float().cpu())
            labels.append(y.cpu())
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, dataset, attack_names: Sequence[str] = ("fgsm", "pgd", "reflect"),
             eps: float = 1 / 255, batch_size: int = 16, device="cpu",
             seed: int = 0) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{"clean": metrics, "<attack>": metrics, ...}`` of ``model`` on ``dataset``."""
    from tqdm import tqdm

    attack_names = attacks.check_attack_names(attack_names)
    check_eps(eps)
    clean, y = predictions(model, dataset, None, eps, batch_size, device, seed)
    results = {"clean": _condition(clean, clean, y)}
    for name in tqdm(list(attack_names), desc=f"attacks at eps={eps:.4g}", unit="attack"):
        pred, _ = predictions(model, dataset, name, eps, batch_size, device, seed)
        results[name] = _condition(clean, pred, y)
    return results


COLUMNS = ("srcc", "plcc", "krcc", "mse", "rmse", "score_change", "robustness")


Results = dict[str, dict[str, dict[str, float]]]  # model -> condition -> metric -> value


def write_report(
    results: Results, out_dir: str | Path, title: str = "Clean and attacked quality prediction"
) -> dict[str, Path]:
    """Writes ``{model: {condition: metrics}}`` as results.json, results.csv and results.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    write_json_atomic(paths["json"], results)
    table = io.StringIO()
    w = csv.writer(table, lineterminator="\n")
    w.writerow(["model", "condition", *COLUMNS])
    for model, conds in results.items():
        for cond, m in conds.items():
            w.writerow([model, cond, *(f"{m[c]:.6f}" for c in COLUMNS)])
    write_text_atomic(paths["csv"], table.getvalue())
    lines = [f"# {title}", "", "| model | condition | " + " | ".join(COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * len(COLUMNS)]  # fmt: skip
    for model, conds in results.items():
        for cond, m in conds.items():
            lines.append(
                f"| {model} | {cond} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS) + " |"
            )
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    return paths
