"""The robustness audit: its report (intervals, worst case, figure) and its gradient-masking
diagnostics, which must fire on a model built to mask gradients (a non-differentiable
quantisation in front) and stay silent on the same model without it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cprl_fast.audit import SUITE, audit, audit_attacks
from cprl_fast.nn import CPRLActivation


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
    return set(report.failed)


def test_silent_on_a_plain_model_and_writes_its_report(data, tmp_path):
    report = audit(Brightness(), data, eps=(2 / 255, 8 / 255), batch_size=16, out_dir=tmp_path,
                   title="brightness")  # fmt: skip
    assert _failed(report) == set(), report.diagnostics
    res = report.results[8 / 255]
    assert res["worst"]["srcc"] <= min(res[a]["srcc"] for a in report.attacks)
    assert res["worst"]["srcc"] < res["clean"]["srcc"]
    md = (tmp_path / "report.md").read_text()
    assert "| 8/255 |" in md and "All passed." in md and "95% bootstrap" in md
    assert (tmp_path / "srcc_vs_eps.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["model"] == "brightness"


def test_one_bar_counts_every_image_of_every_pass(data, capsys):
    from cprl_fast.audit import UNBOUNDED

    audit(Brightness(), data, eps=(0.0, 2 / 255), attacks=("fgsm", "pgd"), batch_size=16)
    err = capsys.readouterr().err
    done = (1 + 2 + len(UNBOUNDED)) * len(data)  # clean, two attacks at 2/255, unbounded
    assert f"{done}/{done}" in err and f"{done + 1}/" not in err  # eps 0 is the clean pass
    assert err.rstrip().split("\r")[-1].startswith(f"audit: {UNBOUNDED[-1]} unbounded: 100%")


def test_fires_on_a_model_that_masks_its_gradients(data, tmp_path):
    report = audit(Brightness(levels=4), data, eps=(2 / 255, 8 / 255), batch_size=16)
    failed = _failed(report)
    assert "unbounded_reaches_chance" in failed, report.diagnostics


@pytest.mark.slow
def test_the_attacks_it_runs_add_transfer_and_the_surrogate_once():
    # what bench/audit_time.py counts as the suite's work
    plain, with_ca = Brightness(), nn.Sequential(CPRLActivation(3), Brightness())
    assert audit_attacks(plain) == list(SUITE)
    assert audit_attacks(with_ca, ("fgsm",), source=plain) == ["fgsm", "transfer", "pgd-soft"]
    assert audit_attacks(with_ca, ("pgd-soft", "transfer"), source=plain) == ["pgd-soft",
                                                                              "transfer"]
    with pytest.raises(ValueError, match="attacks must name at least one attack"):
        audit_attacks(plain, ())


@pytest.mark.slow
def test_cli_audits_any_module(tmp_path, tmp_path_factory):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from data_fixtures import shared_builtin_root

    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": tests + os.pathsep + os.environ.get("PYTHONPATH", "")}
    root = shared_builtin_root(tmp_path_factory)  # only read
    cmd = [sys.executable, "-m", "cprl_fast_cli", "audit", "--module", "test_audit:Brightness",
           "--root", str(root), "--image-size", "16", "--eps", "2/255,8/255",
           "--attack", "fgsm,pgd,square", "--out-dir", str(tmp_path / "out"),
           "--certify", "0.05", "--certify-n", "60"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\x1b[A" not in r.stderr  # no cursor-up escapes of nested bars in a log
    assert "# Robustness audit: test_audit:Brightness" in r.stdout
    assert "diagnostic(s) failed" in r.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images"] == 50 and set(report["results"]) == {str(2 / 255), str(8 / 255)}
    assert [r["radius"] for r in report["certified"][0]["radii"]] == pytest.approx(
        [0.0, 2 / 255 * (3 * 16 * 16) ** 0.5, 8 / 255 * (3 * 16 * 16) ** 0.5])  # fmt: skip
    assert "## Certified (median smoothing)" in r.stdout
    assert (tmp_path / "out" / "certified.png").stat().st_size > 10_000
    bad = subprocess.run([*cmd[:5], "test_audit:nothing"], capture_output=True, text=True,
                         env=env)  # fmt: skip
    assert bad.returncode == 2 and "--module test_audit:nothing" in bad.stderr
    bad = subprocess.run([*cmd, "--certify", "0,x"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--certify must be a number or a fraction" in bad.stderr
    bad = subprocess.run([*cmd, "--certify-feature", "0.5"], capture_output=True, text=True,
                         env=env)  # fmt: skip
    assert bad.returncode == 2 and "--certify-feature needs --certify-layer" in bad.stderr
    bad = subprocess.run([*cmd, "--certify-feature", "0.5", "--certify-layer", "layer1"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "splits a quality ResNet" in bad.stderr.strip().splitlines()[-1]
    assert "%|" not in bad.stderr  # refused before any attack ran: no progress bar


class GradientFree(nn.Module):
    """Brightness with its input gradient cut: white-box attacks see a zero gradient, the
    perfect gradient mask; images crafted on the plain model still move its scores."""

    def forward(self, x):
        return Brightness()(x.detach()) + 0 * x.sum(dim=(1, 2, 3))


def test_transfer_joins_the_suite_and_catches_a_cut_gradient(data):
    masked = audit(GradientFree(), data, eps=(8 / 255,), attacks=("fgsm", "pgd"),
                   batch_size=16, source=Brightness())  # fmt: skip
    assert "transfer" in masked.attacks
    assert "transfer_not_stronger" in _failed(masked), masked.diagnostics
    plain = audit(Brightness(), data, eps=(8 / 255,), attacks=("fgsm", "pgd", "reflect10"),
                  batch_size=16, source=Brightness())  # fmt: skip
    assert "transfer_not_stronger" not in _failed(plain), plain.diagnostics


def test_certified_table_narrows_with_less_noise_and_falls_with_the_radius(data, tmp_path):
    report = audit(Brightness(), data, eps=(2 / 255, 8 / 255), attacks=("fgsm",), batch_size=16,
                   certify_sigmas=(0.02, 0.1), certify_n=200, out_dir=tmp_path)  # fmt: skip
    low, high = report.certified
    assert [r["eps"] for r in low["radii"][1:]] == [2 / 255, 8 / 255]
    for c in (low, high):
        bounds = [r["certified_srcc"] for r in c["radii"]]
        assert bounds == sorted(bounds, reverse=True) and bounds[0] <= c["srcc"] + 1e-12
    assert low["radii"][0]["width"] < high["radii"][0]["width"]
    assert "| 0.02 | 0.000 | - |" in (tmp_path / "report.md").read_text()


def test_more_restarts_must_not_be_weaker():
    from cprl_fast.audit import diagnose

    def results(one: float, three: float) -> dict:
        clean = {"srcc": 0.8, "srcc_ci": [0.5, 0.9], "labels": [0.1, 0.5, 0.9]}
        return {4 / 255: {"clean": clean, "rank": {"srcc": one}, "rank3": {"srcc": three}}}

    unbounded = {"reflect10": {"srcc": 0.0}}
    for three, passed in ((0.05, True), (0.12, True), (0.3, False)):
        checks = diagnose(results(0.1, three), unbounded, soft=False)
        (check,) = [c for c in checks if c.check == "more_restarts_not_weaker"]
        assert check.passed is passed, check


def test_feature_space_rows_sit_beside_the_input_rows_with_their_time(data, tmp_path):
    from cprl_fast.models.cprl_resnet import resnet_iqa

    torch.manual_seed(0)
    model = resnet_iqa("resnet18").eval()
    report = audit(model, data, eps=(2 / 255,), attacks=("fgsm",), batch_size=25,
                   certify_sigmas=(0.1,), certify_n=40, certify_layer="layer2",
                   certify_feature_sigmas=(0.5,), certify_lipschitz="product",
                   out_dir=tmp_path)  # fmt: skip
    inp, feat = report.certified
    assert inp["space"] == "input" and feat["space"] == "feature (layer2)"
    assert "proof" in feat["lipschitz_kind"] and feat["lipschitz"] > 1
    assert feat["seconds"] > 0 and inp["seconds"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "| feature (layer2) | 0.5 |" in md and "Feature-space rows (FS-IQA)" in md
    with pytest.raises(ValueError, match="needs the layer"):
        audit(model, data, eps=(2 / 255,), attacks=("fgsm",), certify_feature_sigmas=(0.5,))
    # the noise levels are checked before any attack runs: pixel units up to 1, features any
    with pytest.raises(ValueError, match="sigma must be at most 1"):
        audit(model, data, eps=(2 / 255,), attacks=("no_such_attack",), certify_sigmas=(2.0,))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        audit(model, data, eps=(2 / 255,), attacks=("no_such_attack",), certify_layer="layer2",
              certify_feature_sigmas=(0.0,))  # fmt: skip


@pytest.mark.slow
def test_cli_audit_refuses_a_checkpoint_whose_split_file_changed(tmp_path_factory, capsys):
    from data_fixtures import train_tiny_run

    from cprl_fast.data import load_splits
    from cprl_fast_cli import main

    split_file = tmp_path_factory.mktemp("split") / "split.json"
    run = train_tiny_run(tmp_path_factory, 32, model="resnet", max_steps=1,
                         split_file=str(split_file))  # fmt: skip
    out = tmp_path_factory.mktemp("audit")
    args = ["audit", "--checkpoint", str(run / "best.pt"), "--attack", "fgsm", "--eps", "1/255",
            "--out-dir", str(out)]  # fmt: skip
    # the trainer was given its (seeded) sets and wrote no file: the split is found again from
    # its seed, the card's
    assert not split_file.exists() and main(args) == 0
    # then a hand-made split appears at the card's path, whose test side the model trained on
    root = json.loads(torch.load(run / "best.pt", weights_only=True)["config"])["root"]
    seeded = load_splits("builtin", root, ("train", "val", "test"))
    scenes = {k: sorted({it.scene for it in d.items}) for k, d in seeded.items()}
    info = seeded["train"].split_info
    split_file.write_text(json.dumps({
        "dataset": "builtin", "seed": None, "score_sha256": info["score_sha256"],
        "train_scenes": scenes["train"][2:] + scenes["test"], "val_scenes": scenes["val"],
        "test_scenes": scenes["train"][:2]}))  # fmt: skip
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "trained on a split with seed=0; found again from its split file" in err
