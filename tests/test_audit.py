"""The robustness audit: its report (intervals, worst case, figure) and its gradient-masking
diagnostics, which must fire on a model built to mask gradients (a non-differentiable
quantisation in front) and stay silent on the same model without it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cprl_fast.audit import audit


class Brightness(nn.Module):
    """Scores an image by its mean brightness; with ``levels`` it first rounds the pixels to
    that many grey levels, which has zero gradient almost everywhere (masking)."""

    def __init__(self, levels: int | None = None):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        if self.levels:
            x = torch.round(x * self.levels) / self.levels
        return torch.sigmoid(6 * (x.mean(dim=(1, 2, 3)) - 0.5))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    level = torch.linspace(0.25, 0.75, 48)
    x = (level[:, None, None, None] + 0.02 * torch.randn(48, 3, 8, 8, generator=g)).clamp(0, 1)
    return torch.utils.data.TensorDataset(x, level)


def _failed(report) -> set[str]:
    return {c["check"] for c in report["diagnostics"] if not c["passed"]}


def test_silent_on_a_plain_model_and_writes_its_report(data, tmp_path):
    report = audit(Brightness(), data, eps=(2 / 255, 8 / 255), batch_size=16, out_dir=tmp_path,
                   title="brightness")  # fmt: skip
    assert _failed(report) == set(), report["diagnostics"]
    res = report["results"][str(8 / 255)]
    assert res["worst"]["srcc"] <= min(res[a]["srcc"] for a in report["attacks"])
    assert res["worst"]["srcc"] < res["clean"]["srcc"]
    md = (tmp_path / "report.md").read_text()
    assert "| 8/255 |" in md and "All passed." in md and "95% bootstrap" in md
    assert (tmp_path / "srcc_vs_eps.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["model"] == "brightness"


def test_fires_on_a_model_that_masks_its_gradients(data, tmp_path):
    report = audit(Brightness(levels=4), data, eps=(2 / 255, 8 / 255), batch_size=16)
    failed = _failed(report)
    assert "unbounded_reaches_chance" in failed, report["diagnostics"]


def test_cli_audits_any_module(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "cprl_fast.cli", "audit", "--module", "test_audit:Brightness",
           "--root", str(tmp_path / "data"), "--image-size", "16", "--eps", "2/255,8/255",
           "--attack", "fgsm,pgd,square", "--out-dir", str(tmp_path / "out")]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "# Robustness audit: test_audit:Brightness" in r.stdout
    assert "diagnostic(s) failed" in r.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images"] == 50 and set(report["results"]) == {str(2 / 255), str(8 / 255)}
    bad = subprocess.run([*cmd[:5], "test_audit:nothing"], capture_output=True, text=True,
                         env=env)  # fmt: skip
    assert bad.returncode == 2 and "--module test_audit:nothing" in bad.stderr
