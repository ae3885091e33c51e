"""`reproduce`: every table and figure into one folder, and a second run resumes from it."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from data_fixtures import shared_builtin_root

from cprl_fast.io import json_text
from cprl_fast.reproduce import reproduce
from cprl_fast.train import TrainConfig


@pytest.mark.slow
def test_protocol_writes_everything_and_resumes(tmp_path, tmp_path_factory, capsys):
    out = tmp_path / "report"
    base = TrainConfig(model_options={"arch": "resnet18"}, image_size=32, batch_size=16,
                       epochs=1, max_steps=2, lr=1e-4)  # fmt: skip
    data_root = shared_builtin_root(tmp_path_factory)  # only read
    report = reproduce("builtin", str(data_root), out, base, attack_names=("fgsm",),
                       b_values=(0.4, 0.5), baselines=("nima",))  # fmt: skip
    assert set(report["main"]) == {"resnet", "cprl", "nima"}
    assert set(report["main"]["cprl"]) == {"clean", "fgsm"}
    assert set(report["table5"]) == {"b=0.4", "b=0.5"}
    assert set(report["table6"]) == {"CA alone", "CA + PNS"}
    assert report["table6"]["CA + PNS"] == report["main"]["cprl"]
    # a bar over every image of every pass, for each evaluation and the figures (Fig. 6's
    # clean pass is the table's)
    n, err = len(report["main"]["resnet"]["clean"]["scores"]), capsys.readouterr().err
    assert f"evaluate resnet: fgsm at eps=1/255: 100%|██████████| {2 * n}/{2 * n}" in err
    assert f"figures: Fig. 6: pgd at eps=8/255: 100%|██████████| {8 * n}/{8 * n}" in err
    for name in ("fig4_landscape", "fig5_channels", "fig6_srcc_vs_eps"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "Table 5" in md and "Table 6" in md and "not human opinion scores" in md
    assert "[cprl-b0.5](models/cprl-b0.5/curves.png)" in md
    assert (out / "models" / "cprl-b0.5" / "curves.png").is_file()
    # every model trained with its ablation's settings
    cfgs = {
        p.parent.name: json.loads(torch.load(p, weights_only=True)["config"])
        for p in (out / "models").glob("*/best.pt")
    }
    assert not list((out / "models").glob("*/last.pt"))  # finished: the model-only file is kept
    assert set(cfgs) == {"resnet", "cprl", "nima", "cprl-b0.5", "ca"}
    assert cfgs["nima"]["model"] == "nima"
    assert cfgs["resnet"]["model"] == "resnet" and cfgs["cprl-b0.5"]["model_options"]["b"] == 0.5
    assert cfgs["ca"]["objective"] == "regression" and cfgs["cprl"]["objective"] is None

    # a second run trains nothing again and recomputes only what is missing: Fig. 6's attacks
    # neither (the figures are drawn again from their step)
    trained = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/best.pt")}
    (resnet_eval,) = (out / "steps").glob("eval-resnet-*.json")
    resnet_eval.unlink()
    (out / "figures" / "fig6_srcc_vs_eps.png").unlink()
    again = reproduce("builtin", str(data_root), out, base, attack_names=("fgsm",),
                      b_values=(0.4, 0.5), baselines=("nima",))  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    assert again["main"]["cprl"] == report["main"]["cprl"]
    assert resnet_eval.is_file()
    assert "eps=8/255" not in capsys.readouterr().err
    assert (out / "figures" / "fig6_srcc_vs_eps.png").stat().st_size > 1000
    assert json_text(again["fig6"]) == json_text(report["fig6"])
    (step,) = (out / "steps").glob("fig6-*.json")  # a step file it cannot use is named
    good = step.read_text()
    step.write_text('{"eps": [0]}')
    with pytest.raises(ValueError, match=r"finished step .*fig6-\w+\.json: Fig\. 6's data is for "
                                         r"other eps.*; remove it to attack again"):  # fmt: skip
        reproduce("builtin", str(data_root), out, base, attack_names=("fgsm",),
                  b_values=(0.4, 0.5), baselines=("nima",))  # fmt: skip
    step.write_text(good)
    # another eps is another result, never the cached one
    other = reproduce("builtin", str(data_root), out, base, eps=8 / 255, attack_names=("fgsm",),
                      b_values=(0.4,), ablations=False, baselines=())  # fmt: skip
    assert other["main"]["cprl"]["fgsm"] != report["main"]["cprl"]["fgsm"]
    assert other["main"]["cprl"]["clean"] == report["main"]["cprl"]["clean"]
    # a finished model of other settings is never reused (its cached numbers neither): the
    # report once said "48 px" over models trained and evaluated at 32
    light = {"b_values": (0.4,), "ablations": False, "baselines": ()}
    for change, said in (({"image_size": 24}, "image_size=32, this run has image_size=24"),
                         ({"max_steps": 3}, "max_steps=2, this run has max_steps=3"),
                         ({"lr": 1e-3}, "lr=0.0001, this run has lr=0.001")):  # fmt: skip
        with pytest.raises(ValueError, match=f"holds a finished resnet model of other settings: "
                                             f"checkpoint .*best.pt was trained with {said}; use "
                                             f"another out_dir, or remove .*resnet to train it"):
            reproduce("builtin", str(data_root), out, dataclasses.replace(base, **change),
                      attack_names=("fgsm",), **light)  # fmt: skip
    # the same settings but other weights (trained again elsewhere): evaluated again
    best = out / "models" / "resnet" / "best.pt"
    state = torch.load(best, weights_only=True)
    state["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, best)
    capsys.readouterr()
    moved = reproduce("builtin", str(data_root), out, base, attack_names=("fgsm",), **light)
    assert moved["main"]["resnet"]["clean"] != report["main"]["resnet"]["clean"]
    # Fig. 6 of the models they are now, attacked again (and CPRL's clean pass: its table was
    # read from its step)
    assert f"figures: Fig. 6: pgd at eps=8/255: 100%|██████████| {9 * n}/{9 * n}" \
        in capsys.readouterr().err
    assert moved["fig6"]["srcc"]["ResNet"] != report["fig6"]["srcc"]["ResNet"]
    assert moved["main"]["cprl"] == report["main"]["cprl"]
    md = (out / "report.md").read_text()
    assert "resnet18 at 32 px, 1 epoch(s) (at most 2 steps), batch 16." in md


@pytest.mark.slow
def test_demo_command(tmp_path, tmp_path_factory):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cprl_fast_cli", "demo", "--recipe", "resized", "--image-size",
           "32", "--max-steps", "2", "--out-dir", str(tmp_path / "demo")]  # fmt: skip
    env = {**os.environ, "CPRL_FAST_CACHE": str(shared_builtin_root(tmp_path_factory))}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "| cprl | pgd |" in r.stdout and "| resnet | fgsm |" in r.stdout
    assert "How to read this" in r.stdout and str(tmp_path / "demo" / "report.md") in r.stdout
    assert (tmp_path / "demo" / "figures" / "fig6_srcc_vs_eps.png").is_file()
    assert not (tmp_path / "demo" / "tables" / "table5_b").exists()  # no ablations in the demo
    # it ends with where its models are and three commands to try on them, paths that exist
    cprl = tmp_path / "demo" / "models" / "cprl" / "best.pt"
    assert cprl.is_file() and f"cprl-fast score --model {cprl} PHOTO.png" in r.stdout
    assert f"training curves: {cprl.parent / 'curves.png'}, " in r.stdout
    audit = tmp_path / "demo" / "audit"
    assert f"cprl-fast audit --checkpoint {cprl} --out-dir {audit}" in r.stdout
    assert f"cprl-fast export {cprl} --format pt2" in r.stdout
    assert re.search(r"^demo took \d+ s \(wall time\)$", r.stdout, flags=re.MULTILINE)


def test_an_attack_without_its_source_model_is_refused_before_any_model_trains(tmp_path):
    """The protocol gives its attacks no source model: ``transfer`` would fail at the first
    evaluation, after every model had trained."""
    with pytest.raises(ValueError, match="attack 'transfer' needs a source model"):
        reproduce("builtin", None, tmp_path / "out", TrainConfig(),
                  attack_names=("fgsm", "transfer"))  # fmt: skip
    assert not (tmp_path / "out").exists()
