"""The robustness study: per-scene test subsets, the transfer source, and a tiny end-to-end
study that trains, audits, summarises with intervals over the runs, resumes and refuses
changed settings."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import shared_builtin_root

from cprl_fast import metrics
from cprl_fast.data.base import IQADataset, Item
from cprl_fast.installation import machine
from cprl_fast.presets import STUDY_NOISE_SIGMA, preset_config
from cprl_fast.study import (
    audit_subset,
    check_share,
    report_only_summary,
    run_names,
    study,
    transfer_source,
)
from cprl_fast.train import TrainConfig
from cprl_fast_cli.options import UserError
from cprl_fast_cli.study import parse_share, without_share

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _items(scenes: int, per: int) -> list[Item]:
    return [Item(path=f"s{s}_{i}.png", score=i / per, raw_score=float(i), scene=f"s{s}")
            for s in range(scenes) for i in range(per)]  # fmt: skip


def test_subset_draws_per_scene_in_order_and_reproducibly():
    ds = IQADataset("x", _items(4, 10), split_info={"seed": 0})
    sub = audit_subset(ds, 3, seed=1)
    scenes = [it.scene for it in sub.items]
    assert len(sub) == 12 and {scenes.count(f"s{s}") for s in range(4)} == {3}
    order = [ds.items.index(it) for it in sub.items]
    assert order == sorted(order)
    assert [it.path for it in audit_subset(ds, 3, seed=1).items] == [it.path for it in sub.items]
    assert [it.path for it in audit_subset(ds, 3, seed=2).items] != [it.path for it in sub.items]
    assert sub.split_info["subset_per_scene"] == 3 and audit_subset(ds, None, 0) is ds
    with pytest.raises(ValueError, match="per_scene must be >= 3"):
        audit_subset(ds, 2, 0)


def test_transfer_source_is_a_sibling():
    assert transfer_source("cprl", ["resnet", "ca", "cprl"]) == "resnet"
    assert transfer_source("resnet", ["resnet", "ca", "cprl"]) == "ca"
    with pytest.raises(ValueError, match="at least two models"):
        transfer_source("resnet", ["resnet"])


def test_presets_merge_their_options_over_the_base():
    base = TrainConfig(model_options={"arch": "resnet18", "b": 0.3},
                       objective_options={"mode": "fast"})  # fmt: skip
    light = preset_config("cprl-lam0.1", base)
    assert light.model == "cprl" and light.model_options == base.model_options
    assert light.objective_options == {"mode": "fast", "lam": 0.1}
    assert light.experiment()["objective_options"] == {"lam": 0.1, "mode": "fast"}
    paper = preset_config("cprl", base)
    assert paper.objective_options == {"mode": "fast"}
    assert paper.experiment()["objective_options"]["lam"] == 1.0
    assert preset_config("ca", TrainConfig()).objective == "regression"


@pytest.mark.slow
def test_study_end_to_end_resumes_and_refuses_other_settings(tmp_path, tmp_path_factory):
    base = TrainConfig(model_options={"arch": "resnet18"}, image_size=32, epochs=1,
                       max_steps=1, batch_size=8)  # fmt: skip
    out, root = tmp_path / "study", str(shared_builtin_root(tmp_path_factory))
    kw = dict(folds=2, seeds=(0,), models=("resnet", "ca-noise"), eps=(4 / 255,),
              attacks=("fgsm",), per_scene=3, command="test")  # fmt: skip
    report = study("builtin", root, out, base, **kw)
    runs = report["runs"]
    assert set(runs) == {"fold0-seed0", "fold1-seed0"}
    # the summary is the mean of the runs' own audits, with the t-interval over the runs
    key = str(4 / 255)
    worst = [json.loads((out / "runs" / r / "audit" / "ca-noise" / "report.json").read_text())
             ["results"][key]["worst"]["srcc"] for r in sorted(runs)]  # fmt: skip
    got = report["summary"]["models"]["ca-noise"][key]
    assert got["mean"] == pytest.approx(np.mean(worst))
    assert got["ci"] == pytest.approx(metrics.mean_interval(worst, bounds=(-1, 1))["ci"])
    audit_path = out / "runs" / "fold0-seed0" / "audit" / "ca-noise" / "report.json"
    audit = json.loads(audit_path.read_text())
    # the MSU benchmark's scores of the worst case, from each run's clean and worst scores
    gains = []
    for r in sorted(runs):
        res = json.loads((out / "runs" / r / "audit" / "ca-noise" / "report.json").read_text())
        cond = res["results"][key]
        gains.append(metrics.msu_scores(cond["clean"]["scores"],
                                        cond["worst"]["scores"])["absolute_gain"])
    msu = report["summary"]["msu"]["ca-noise"][key]["absolute_gain"]
    assert msu["mean"] == pytest.approx(np.mean(gains)) and msu["n"] == 2
    assert audit["images"] == 15 and "transfer" in audit["attacks"]
    assert audit["transfer_from"] == "resnet" and audit["machine"] == machine("cpu")
    steps = json.loads((out / "runs" / "fold0-seed0" / "steps" / "train-ca-noise.json").read_text())
    assert steps["machine"] == machine("cpu") and steps["seconds"] > 0
    assert {c["check"] for c in audit["diagnostics"]} >= {"transfer_not_stronger"}
    md = (out / "report.md").read_text()
    assert "| CA alone, noise-trained |" in md and "## Difference to ResNet" in md
    assert "| absolute gain | worst 4/255 |" in md
    assert f"min in all, on CPU {machine('cpu')['CPU']}, CPU kernels ATen " in md
    assert "## Certified" not in md
    ckpt = torch.load(out / "runs" / "fold0-seed0" / "models" / "ca-noise" / "best.pt",
                      weights_only=True)  # fmt: skip
    assert json.loads(ckpt["config"])["noise_sigma"] == STUDY_NOISE_SIGMA
    assert (out / "worst_vs_eps.png").stat().st_size > 10_000
    # resumed: nothing is retrained or re-attacked, even where the models are gone (they are
    # not committed: a clone of a finished study summarises without training)
    stamp = (out / "runs" / "fold1-seed0" / "audit" / "resnet" / "report.json").stat().st_mtime_ns
    shutil.rmtree(out / "runs" / "fold1-seed0" / "models")
    assert study("builtin", root, out, base, **kw)["summary"] == report["summary"]
    assert (out / "runs" / "fold1-seed0" / "audit" / "resnet" / "report.json").stat(
    ).st_mtime_ns == stamp  # fmt: skip
    assert not (out / "runs" / "fold1-seed0" / "models").exists()
    with pytest.raises(ValueError, match=r"other settings \(eps differ\)"):
        study("builtin", root, out, base, **{**kw, "eps": (8 / 255,)})
    # a run setting is named, not "config" alone (a study moved from a CPU to a GPU, say)
    with pytest.raises(ValueError, match=r"other settings \(config\.lr \(3e-05, now 0\.001\) "
                                         r"differ\)"):
        study("builtin", root, out, dataclasses.replace(base, lr=1e-3), **kw)
    # certification added to the finished study: the attacks are kept, each run certified,
    # unless a model trained again came out with other weights than its audit's (another
    # machine): then it is audited again, so the attacks and the certificate are of one model
    assert re.fullmatch(r"[0-9a-f]{64}", audit["weights"])
    other_path = out / "runs" / "fold1-seed0" / "audit" / "ca-noise" / "report.json"
    other = json.loads(other_path.read_text())
    other["weights"], other["seconds"] = "0" * 64, -1.0
    other_path.write_text(json.dumps(other))
    certified = study("builtin", root, out, base, **kw, certify_sigmas=(0.25,), certify_n=16)
    again = json.loads(audit_path.read_text())
    assert again["results"] == audit["results"] and again["certified"][0]["n"] == 16
    assert again["seconds"] == audit["seconds"]  # kept: its model's weights were its audit's
    redone = json.loads(other_path.read_text())
    assert redone["seconds"] > 0 and redone["weights"] != "0" * 64
    assert redone["certified"][0]["n"] == 16
    # the removed models were trained again for it, from their seeds
    assert (out / "runs" / "fold1-seed0" / "models" / "ca-noise" / "best.pt").is_file()
    per_run = [json.loads((out / "runs" / r / "audit" / "ca-noise" / "report.json").read_text())
               ["certified"][0]["radii"][1]["certified_srcc"] for r in sorted(runs)]  # fmt: skip
    cell = certified["summary"]["certified"]["ca-noise"][0]["radii"][1]["certified_srcc"]
    assert cell["mean"] == pytest.approx(np.mean(per_run))
    assert "## Certified (median smoothing)" in (out / "report.md").read_text()


def test_study_refuses_bad_models(tmp_path):
    base = TrainConfig()
    with pytest.raises(ValueError, match="study model 'vgg'"):
        study("builtin", None, tmp_path, base, models=("resnet", "vgg"))
    with pytest.raises(ValueError, match="at least two different"):
        study("builtin", None, tmp_path, base, models=("resnet", "resnet"))
    # one seed twice planned each run twice (and two --share processes raced for it)
    with pytest.raises(ValueError, match=r"seeds must be different, got \[1, 1\]"):
        study("builtin", None, tmp_path, base, seeds=(1, 1))
    with pytest.raises(ValueError, match=r"seeds must be an integer from 0 to 2\*\*63 - 1"):
        study("builtin", None, tmp_path, base, seeds=(0, -1))
    assert list(tmp_path.iterdir()) == []  # refused before any folder is made


def test_share_parses_checks_and_leaves_the_recorded_command():
    assert parse_share("1/2") == (1, 2) and parse_share("0/1") == (0, 1)
    for bad in ("2/2", "1", "a/2", "-1/2", "0/0"):
        with pytest.raises(UserError, match=f"--share must be K/N with 0 <= K < N.*{bad!r}"):
            parse_share(bad)
    with pytest.raises(ValueError, match="share must be K/N"):
        check_share((3, 2))
    argv = ["study", "--share", "1/2", "--folds", "3", "--share=0/2"]
    assert without_share(argv) == ["study", "--folds", "3"]
    names = [n for n, _, _ in run_names(2, (0, 1))]
    assert names == ["fold0-seed0", "fold1-seed0", "fold0-seed1", "fold1-seed1"]


@pytest.mark.slow
def test_study_shares_split_the_runs_and_the_last_one_summarises(tmp_path, tmp_path_factory,
                                                                 capsys):  # fmt: skip
    base = TrainConfig(model_options={"arch": "resnet18"}, image_size=32, epochs=1,
                       max_steps=1, batch_size=8)  # fmt: skip
    out, root = tmp_path / "study", str(shared_builtin_root(tmp_path_factory))
    kw = dict(folds=2, seeds=(0,), models=("resnet", "ca"), eps=(4 / 255,), attacks=("fgsm",),
              per_scene=3, command="test")  # fmt: skip
    # the first share does fold 0 only: one finished run, no summary yet
    assert study("builtin", root, out, base, **kw, share=(0, 2)) == {}
    assert (out / "runs" / "fold0-seed0" / "audit" / "ca" / "report.json").is_file()
    assert not (out / "runs" / "fold1-seed0").exists() and not (out / "report.json").exists()
    # the second does fold 1 and summarises both
    report = study("builtin", root, out, base, **kw, share=(1, 2))
    assert set(report["runs"]) == {"fold0-seed0", "fold1-seed0"}
    assert "study: run 1 of 1 (share 1/2): fold1-seed0\n" in capsys.readouterr().err
    # which the whole study, resumed, finds done: the same summary, nothing trained
    shutil.rmtree(out / "runs" / "fold0-seed0" / "models")
    assert study("builtin", root, out, base, **kw)["summary"] == report["summary"]
    err = capsys.readouterr().err  # a line per run, in order
    assert err.index("study: run 1 of 2: fold0-seed0") < err.index("study: run 2 of 2: fold1")
    assert not (out / "runs" / "fold0-seed0" / "models").exists()


def test_audit_crop_is_the_central_square_of_each_image(tmp_path):
    from PIL import Image

    from cprl_fast.data.transforms import to_tensor

    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        path = tmp_path / f"s{i % 2}_{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        items.append(Item(path=str(path), score=i / 4, raw_score=float(i), scene=f"s{i % 2}"))
    ds = IQADataset("x", items, split_info={"seed": 0})
    sub = audit_subset(ds, None, 0, crop=32)
    whole = to_tensor(Image.open(items[1].path).convert("RGB"))
    assert torch.equal(sub[1][0], whole[:, 8:40, 16:48]) and sub.split_info["audit_crop"] == 32
    assert len(audit_subset(ds, 3, 0, crop=32)) == 4
    with pytest.raises(ValueError, match="audit crop must be >= 32 px"):
        audit_subset(ds, None, 0, crop=16)
    with pytest.raises(ValueError, match=r"audit crop must be between 32 px and the image size "
                                         r"\(64 px\), got 128"):  # fmt: skip
        study("builtin", None, tmp_path / "s", TrainConfig(image_size=64), audit_crop=128)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("models", 5, "models must be a list of at least two of resnet, ca"),
    ("models", ["nope", "ca"], "models must be a list of at least two of"),
    ("eps", "x", r"eps must be a list of budgets in \(0, 1\], got 'x'"),
    ("eps", [8], r"eps must be a list of budgets in \(0, 1\], got \[8\]"),
    ("folds", "a", "folds must be an integer >= 2, got 'a'"),
    ("seeds", None, "seeds must be a list of integer seeds, got None"),
    ("per_scene", 0, "per_scene must be an integer >= 1 or null, got 0"),
    ("config", [], "config must be an object of training settings, got \\[\\]"),
])  # fmt: skip
def test_report_only_names_a_bad_entry_of_the_settings_file(tmp_path, key, value, message):
    # each used to fail inside the summary with Python's own words ("'int' object is not
    # iterable"), naming neither the file nor the entry
    settings = json.loads((RESULTS / "robustness-builtin-v2" / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({**settings, key: value}))
    with pytest.raises(ValueError, match=rf"study settings {tmp_path / 'study.json'}: {message}"):
        report_only_summary(tmp_path)
