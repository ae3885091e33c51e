"""The evaluation report, the figures' data, and `cprl-fast evaluate`."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from data_fixtures import shared_builtin_root
from PIL import Image

from cprl_fast import figures, metrics
from cprl_fast.data import load_dataset, load_splits
from cprl_fast.evaluate import (
    evaluate,
    evaluate_passes,
    parse_eps,
    passes_to_score,
    predictions,
    worst_case,
)
from cprl_fast.io import json_text
from cprl_fast.models import cprl_resnet, resnet_iqa
from cprl_fast.render import write_results
from cprl_fast.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = shared_builtin_root(tmp_path_factory)
    return root, load_dataset("builtin", root, split="test", image_size=32)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"cprl": cprl_resnet("resnet18").eval(), "resnet": resnet_iqa("resnet18").eval()}


def test_parse_eps():
    assert parse_eps("1/255") == pytest.approx(1 / 255)
    assert parse_eps("0.5") == 0.5 and parse_eps(1) == 1.0
    with pytest.raises(ValueError, match="fraction like 1/255"):
        parse_eps("one")
    # a budget in grey levels by mistake: for images in [0, 1] anything above 1 is unbounded
    with pytest.raises(ValueError, match=r"at most 1 .*got 8; 8 grey levels is 8/255"):
        parse_eps("8")
    with pytest.raises(ValueError, match=r"at most 1 .*got 1\.5$"):
        parse_eps(1.5)


@pytest.mark.slow
def test_eps_zero_is_the_clean_result_and_attacks_move_scores(data, models):
    _, ds = data
    model = models["resnet"]
    clean, y = predictions(model, ds, None, 0.0)
    zero, _ = predictions(model, ds, "pgd", 0.0)
    np.testing.assert_array_equal(clean, zero)
    res = evaluate(model, ds, ["fgsm", "pgd"], eps=2 / 255)
    assert res["clean"]["srcc"] == pytest.approx(metrics.srcc(clean, y))
    assert res["clean"]["score_change"] == 0.0
    assert res["pgd"]["score_change"] > 0 and res["pgd"]["mse"] > res["clean"]["mse"]


def test_report_files_agree(data, models, tmp_path):
    _, ds = data
    results = {"resnet": evaluate(models["resnet"], ds, ["fgsm"], eps=1 / 255)}
    paths = write_results(results, tmp_path)
    assert json.loads(paths["json"].read_text()) == results
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["condition"] for r in rows] == ["clean", "fgsm"]
    assert float(rows[1]["srcc"]) == pytest.approx(results["resnet"]["fgsm"]["srcc"], abs=1e-6)
    md = paths["md"].read_text()
    assert "| resnet | fgsm |" in md and md.count("\n| resnet |") == 2


def test_worst_case_is_no_better_than_any_attack():
    # attack a pulls the better half down, attack b lifts the worse half: each alone leaves
    # half the order intact, their per-image combination inverts more of it
    y = np.linspace(0, 1, 40)
    above = y > np.median(y)
    attacked = {"a": np.where(above, y - 0.6, y), "b": np.where(above, y, y + 0.6)}
    which, pred = worst_case(y, attacked, y)
    assert which == "per image"
    assert metrics.srcc(pred, y) < min(metrics.srcc(p, y) for p in attacked.values())
    np.testing.assert_array_equal(pred, np.where(above, y - 0.6, y + 0.6))
    # where one attack is worse than any combination, it is the worst case
    strong = {"a": 1 - y, "b": y + 0.01}
    assert worst_case(y, strong, y)[0] == "a"
    # both attacks lift the better half, which helps the order there: left clean, those
    # images hurt it more, and the clean image is inside every ball too
    lifts = {"a": y + 0.6, "b": np.where(above, y + 0.3, y + 0.9)}
    which, pred = worst_case(y, lifts, y)
    assert which == "per image"
    np.testing.assert_array_equal(pred, np.where(above, y, y + 0.9))
    # never milder than the combination of the attacked versions alone (the rule before)
    rng = np.random.default_rng(0)
    for _ in range(50):
        clean = y + rng.normal(0, 0.3, y.size)
        noisy = {k: clean + rng.normal(0, 0.3, y.size) for k in "abc"}
        stack = np.stack(list(noisy.values()))
        before = np.where(above, stack.min(axis=0), stack.max(axis=0))
        _, pred = worst_case(clean, noisy, y)
        assert metrics.srcc(pred, y) <= metrics.srcc(before, y)


def test_worst_case_does_not_depend_on_where_an_undefined_srcc_comes():
    """An attack that gives every image one score has no SRCC (NaN): before, it was the worst
    case when it came first and passed over when it came later."""
    y = np.linspace(0, 1, 20)
    attacks = {"flat": np.full(20, 0.5), "reverse": 1 - y, "mild": y + 0.01}
    for order in (("flat", "reverse", "mild"), ("reverse", "flat", "mild"),
                  ("mild", "flat", "reverse")):  # fmt: skip
        which, pred = worst_case(y, {k: attacks[k] for k in order}, y)
        assert metrics.srcc(pred, y) == pytest.approx(-1.0), (order, which)


@pytest.mark.slow
def test_report_has_intervals_worst_case_and_paired_comparisons(data, models, tmp_path):
    _, ds = data
    results = {n: evaluate(m, ds, ["fgsm", "rank"], eps=2 / 255, batch_size=25)
               for n, m in models.items()}  # fmt: skip
    for conds in results.values():
        assert set(conds) == {"clean", "fgsm", "rank", "worst"}
        for m in conds.values():
            lo, hi = m["srcc_ci"]
            assert lo <= m["srcc"] <= hi and hi - lo > 0
        assert conds["worst"]["srcc"] <= min(conds["fgsm"]["srcc"], conds["rank"]["srcc"])
        assert conds["clean"]["robustness"] is None  # no floor artefact for unmoved scores
    md = write_results(results, tmp_path)["md"].read_text()
    assert "| cprl | worst (" in md and "95% bootstrap intervals over the 50 images" in md
    first, other = list(results)
    assert f"SRCC({other}) - SRCC({first}) on the same images" in md and "| worst |" in md
    assert f"positive: {other} ranks the images better than {first}" in md


def _png(path):
    with Image.open(path) as img:
        return img.size


def test_landscape_centre_is_the_clean_score(models, tmp_path):
    x = torch.rand(1, 3, 32, 32)
    grid, z = figures.landscape(models["cprl"], x, extent=4 / 255, steps=5)
    with torch.no_grad():
        clean = float(models["cprl"](x))
    assert z.shape == (5, 5) and grid[2] == 0.0
    assert z[2, 2] == pytest.approx(clean, abs=1e-6)
    out = figures.score_landscape(models, x, tmp_path / "fig4.png", extent=4 / 255, steps=5)
    assert set(out) == {"cprl", "resnet"} and _png(tmp_path / "fig4.png")[0] > 400


def test_channel_activations_sorted_by_natural_magnitude(models, tmp_path):
    x = torch.rand(4, 3, 32, 32)
    layers = {n: (m, m.backbone.layer4[-1]) for n, m in models.items()}
    out = figures.channel_activations(layers, x, tmp_path / "fig5.png", eps=4 / 255)
    nat = np.abs(out["cprl"]["natural"])
    assert len(nat) == 512 and np.all(np.diff(nat) <= 0)
    assert out["cprl"]["attacked"] != out["cprl"]["natural"]
    assert _png(tmp_path / "fig5.png")[0] > 400


def test_srcc_vs_eps_starts_at_the_clean_srcc(data, models, tmp_path):
    _, ds = data
    out = figures.srcc_vs_eps({"resnet": models["resnet"]}, ds, tmp_path / "fig6.png",
                              eps_values=(0, 4 / 255))  # fmt: skip
    clean, y = predictions(models["resnet"], ds, None, 0)
    assert out["srcc"]["resnet"][0] == pytest.approx(metrics.srcc(clean, y))
    assert _png(tmp_path / "fig6.png")[0] > 300


class TinyResNet(torch.nn.Module):
    """A ResNet's outline at almost no cost: ``backbone.layer4`` (what Fig. 5 hooks), a head."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.layer4 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.backbone.layer4(x).mean(dim=(2, 3))))[:, 0]


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 8, 8, generator=g)
    torch.manual_seed(0)
    return TinyResNet().eval(), torch.utils.data.TensorDataset(x, torch.rand(12, generator=g))


def test_passes_to_score_counts_the_passes_a_memo_lacks(tiny):
    model, ds = tiny
    seen = []

    def progress(attack, eps, count):
        seen.append((attack, count))

    # without a memo of the caller's, an attack at eps 0 is still the one clean pass
    assert passes_to_score(model, ds, evaluate_passes(["fgsm", "pgd"], 0.0)) == 1
    evaluate(model, ds, ["fgsm", "pgd"], 0.0, batch_size=5, progress=progress)
    assert seen == [(None, 5), (None, 5), (None, 2)]
    planned = evaluate_passes(["fgsm", "pgd"], 2 / 255)
    memo, seen[:] = {}, []
    assert passes_to_score(model, ds, planned, 5, memo=memo) == 3
    evaluate(model, ds, ["fgsm"], 2 / 255, batch_size=5, memo=memo, progress=progress)
    assert sum(n for _, n in seen) == 2 * len(ds)
    assert passes_to_score(model, ds, planned, 5, memo=memo) == 1  # pgd's
    assert passes_to_score(model, ds, planned, 4, memo=memo) == 3  # another batch size
    assert passes_to_score(TinyResNet(), ds, planned, 5, memo=memo) == 3  # another model


def test_fewer_than_two_images_are_refused_by_name(tiny):
    model, ds = tiny
    for n in (0, 1):
        few = torch.utils.data.Subset(ds, range(n))
        with pytest.raises(ValueError, match=f"evaluate needs at least 2 images .*got {n}$"):
            evaluate(model, few, ["fgsm"], 1 / 255)


def test_a_memo_never_gives_a_model_the_scores_of_a_freed_one_at_its_address(tiny, monkeypatch):
    """reproduce's b sweep trains a model, evaluates it with the run's memo, drops it and
    trains the next, which CPython may give the freed one's id (the memo's key holds ids):
    its scores were then the freed model's. Here both models get one id (``id`` patched in
    the module), as the freed model and the next would."""
    import builtins

    from cprl_fast import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "id", lambda o: 7 if isinstance(o, TinyResNet)
                        else builtins.id(o), raising=False)  # fmt: skip
    _, ds = tiny
    memo = {}
    torch.manual_seed(1)
    first = TinyResNet().eval()
    before, _ = predictions(first, ds, None, 0.0, batch_size=5, memo=memo)
    torch.manual_seed(2)
    second = TinyResNet().eval()
    assert passes_to_score(second, ds, [(None, 0.0)], 5, memo=memo) == 1
    got, _ = predictions(second, ds, None, 0.0, batch_size=5, memo=memo)
    want, _ = predictions(second, ds, None, 0.0, batch_size=5)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, before)
    assert passes_to_score(second, ds, [(None, 0.0)], 5, memo=memo) == 0


def test_figures_bar_counts_the_fig6_passes_a_run_has_not_scored(tiny, tmp_path, capsys):
    model, ds = tiny
    memo = {}
    evaluate(model, ds, [figures.FIG6_ATTACK], 1 / 255, batch_size=4, memo=memo)
    data = figures.draw_figures({"tiny": model}, ds, tmp_path, batch_size=4, memo=memo)
    done = (len(figures.FIG6_EPS) - 2) * len(ds)  # the clean and 1/255 passes were scored
    err = capsys.readouterr().err
    assert f"{done}/{done}" in err and f"{done + 1}/" not in err
    assert err.rstrip().split("\r")[-1].startswith("figures: Fig. 6: pgd at eps=8/255: 100%")
    assert data["eps"] == list(figures.FIG6_EPS) and len(data["srcc"]["tiny"]) == len(data["eps"])
    assert len(memo) == len(figures.FIG6_EPS)
    # drawn again from that data as JSON keeps it (an undefined SRCC is null): nothing scored
    data = json.loads(json_text({**data, "srcc": {"tiny": [None, *data["srcc"]["tiny"][1:]]}}))
    (tmp_path / "fig6_srcc_vs_eps.png").unlink()
    assert figures.draw_figures({"tiny": model}, ds, tmp_path, batch_size=4, fig6=data) == data
    assert "Fig. 6: pgd" not in capsys.readouterr().err
    assert _png(tmp_path / "fig6_srcc_vs_eps.png")[0] > 300
    # data of other models or budgets, or malformed, is named, never drawn as these models'
    for bad, said in (({**data, "eps": [0, 1 / 255]}, "is for other eps"),
                      ({**data, "srcc": {"other": data["srcc"]["tiny"]}}, "srcc of other models"),
                      ({**data, "ci": {"tiny": data["ci"]["tiny"][:2]}}, "malformed ci of 'tiny'"),
                      ({**data, "srcc": {"tiny": ["0.5"] * 5}}, "malformed srcc of 'tiny'"),
                      ([], "is for other eps")):  # fmt: skip
        with pytest.raises(ValueError, match=f"Fig. 6's data .*{re.escape(said)}.*expected that "
                                             r"of \['tiny'\]"):  # fmt: skip
            figures.draw_figures({"tiny": model}, ds, tmp_path, batch_size=4, fig6=bad)


@pytest.mark.slow
def test_a_run_computes_each_prediction_once(data, models, tmp_path, monkeypatch):
    # a table at 1/255 and Fig. 6 over (0, 1/255, 2/255) share the clean and the 1/255 scores
    _, ds = data
    model = models["resnet"]
    expected = evaluate(model, ds, ["pgd"], eps=1 / 255)
    fig_expected = figures.srcc_vs_eps({"r": model}, ds, tmp_path / "a.png",
                                       eps_values=(0, 1 / 255, 2 / 255))  # fmt: skip
    calls = []
    real = figures.attacks.run_attack

    def counted(name, model, x, y, eps, *args):
        calls.append((name, eps))
        return real(name, model, x, y, eps, *args)

    monkeypatch.setattr(figures.attacks, "run_attack", counted)  # the module evaluate uses
    memo = {}
    table = evaluate(model, ds, ["pgd"], eps=1 / 255, memo=memo)
    batches = len(calls)
    fig = figures.srcc_vs_eps({"r": model}, ds, tmp_path / "b.png",
                              eps_values=(0, 1 / 255, 2 / 255), memo=memo)  # fmt: skip
    assert {eps for _, eps in calls[batches:]} == {2 / 255}  # only the new budget ran
    assert len(memo) == 3  # clean, pgd at 1/255, pgd at 2/255
    assert table["pgd"]["srcc"] == expected["pgd"]["srcc"]
    assert table["clean"]["scores"] == expected["clean"]["scores"]
    assert fig["srcc"] == fig_expected["srcc"]
    again, _ = predictions(model, ds, "pgd", 1 / 255, memo=memo)
    again[:] = -1  # each call gets its own copy
    assert table["pgd"]["scores"] == list(predictions(model, ds, "pgd", 1 / 255, memo=memo)[0])


def test_a_model_of_another_split_is_not_scored_on_images_it_learned_from(data, models):
    from cprl_fast.train.runs import Trained, check_held_out, load_run_splits

    root, _ = data
    model = models["resnet"]

    def trained(**split) -> Trained:
        cfg = TrainConfig(model="resnet", image_size=32, root=str(root), **split)
        return Trained("run", model, cfg, root / "best.pt")

    first = trained()
    sides = load_run_splits(first.config, ("train", "val", "test"), from_card=True)
    for split in ("val", "test"):
        check_held_out(first, sides[split], split, str(root))  # its own split passes
    other = trained(split_seed=1)
    learned = {it.scene for it in load_run_splits(other.config, ("train", "val"))["train"].items}
    assert learned & {it.scene for it in sides["test"].items}  # seed 1 trains on them
    with pytest.raises(ValueError, match=r"\(run\) learned from [12] of the 2 scenes of the "
                                         r"builtin test images evaluated .*split seed 1, "
                                         r"val_ratio 0\.2\): .*would not be held out"):
        check_held_out(other, sides["test"], "test", str(root))
    check_held_out(other, sides["train"], "train", str(root))  # asked for knowingly
    check_held_out(other, sides["test"], "all", str(root))
    cross = Trained("run", model, TrainConfig(model="resnet", dataset="live"), root)
    check_held_out(cross, sides["test"], "test", str(root))  # another dataset: no shared image
    # the validation side is held out from training alone: a model that chose its checkpoint
    # on these scenes but never trained on them may be scored there
    by_val = trained(split_seed=0, val_ratio=0.4)
    its = load_run_splits(by_val.config, ("train", "val"))
    evaluated = {it.scene for it in sides["val"].items}
    assert not evaluated & {it.scene for it in its["train"].items}, "pick another ratio"
    check_held_out(by_val, sides["val"], "val", str(root))


def test_a_split_found_again_must_be_the_one_the_card_records(data, models, tmp_path):
    from cprl_fast.train.runs import Trained, check_card_split, check_held_out, load_run_splits

    root, _ = data
    seeded = TrainConfig(model="resnet", image_size=32, root=str(root))
    sides = load_run_splits(seeded, ("train", "val", "test"))
    scenes = {k: sorted({it.scene for it in d.items}) for k, d in sides.items()}
    # a hand-made split (seed null) that trains on the seeded split's test scenes
    hand = {**{k: v for k, v in sides["train"].split_info.items() if k != "split"},
            "seed": None, "train_scenes": scenes["train"][2:] + scenes["test"],
            "val_scenes": scenes["val"], "test_scenes": scenes["train"][:2]}  # fmt: skip
    hand.pop("counts")
    split_file = tmp_path / "hand.json"
    split_file.write_text(json.dumps(hand))
    cfg = TrainConfig(model="resnet", image_size=32, root=str(root), split_file=str(split_file))
    own = load_run_splits(cfg, ("train", "val", "test"))
    card = {k: v for k, v in own["train"].split_info.items() if k != "split"}
    trained = Trained("hand", models["resnet"], cfg, tmp_path / "best.pt",
                      {**card, "split": "train"})  # fmt: skip
    check_card_split(trained, load_run_splits(cfg, ("test",), from_card=True)["test"])
    check_held_out(trained, own["test"], "test", str(root))
    split_file.unlink()  # gone: the split found again from the seed is another one
    found = load_run_splits(cfg, ("test",), from_card=True)["test"]
    assert {it.scene for it in found.items} <= set(hand["train_scenes"])  # what it trained on
    said = (r"\(hand\) trained on a split with seed=None; found again from its seed \(0; "
            r"the split file .*hand.json is not there\), it has seed=0")
    for check in (lambda: check_card_split(trained, found),
                  lambda: check_held_out(trained, found, "test", str(root))):  # fmt: skip
        with pytest.raises(ValueError, match=said):
            check()
    # edited since: the same seed entry, other scenes on the held-out sides
    split_file.write_text(json.dumps({**hand, "test_scenes": scenes["train"][:1],
                                      "train_scenes": hand["train_scenes"] + scenes["train"][1:2]}))
    edited = load_run_splits(cfg, ("test",), from_card=True)["test"]
    with pytest.raises(ValueError, match=r"with counts=.*found again from its split file"):
        check_card_split(trained, edited)


def test_datasets_of_the_same_photographs_count_as_one(data, models, monkeypatch):
    # builtin and builtin-v2 distort the same photographs: a model of one has seen the other's
    # scenes of the same names (here another dataset is made one of the family, so that the
    # test needs no builtin-v2)
    from cprl_fast.data.base import LOADERS, IQADataset
    from cprl_fast.data.builtin import PHOTOGRAPHS
    from cprl_fast.train.runs import Trained, check_held_out, load_run_splits

    assert LOADERS.info("builtin")["photographs"] == LOADERS.info("builtin-v2")["photographs"]
    root, _ = data
    info = LOADERS.info
    monkeypatch.setattr(LOADERS, "info", lambda name: {**info(name), "photographs": PHOTOGRAPHS}
                        if name == "live" else info(name))  # fmt: skip
    cfg = TrainConfig(model="resnet", image_size=32, root=str(root))
    tested = load_run_splits(cfg, ("test",))["test"]
    as_live = IQADataset("live", tested.items, None)
    check_held_out(Trained("own", models["resnet"], cfg, root), as_live, "test")
    other = Trained("seed1", models["resnet"], dataclasses.replace(cfg, split_seed=1), root)
    with pytest.raises(ValueError, match=r"of builtin, made of the same photographs\): scored "
                                         r"there, it would not be held out; score it on "
                                         r"builtin's test split"):
        check_held_out(other, as_live, "test")


@pytest.mark.slow
def test_cli_evaluate(data, tmp_path):
    root, _ = data
    cfg = TrainConfig(model_options={"arch": "resnet18"}, image_size=32, batch_size=8,
                      max_steps=1, root=str(root), out_dir=str(tmp_path / "run"))  # fmt: skip
    train = load_dataset("builtin", root, split="train", image_size=32)
    Trainer(cfg, train).fit()
    cmd = [sys.executable, "-m", "cprl_fast_cli", "evaluate", "--checkpoint",
           str(tmp_path / "run" / "last.pt"), "--attack", "fgsm,pgd", "--eps", "1/255",
           "--out-dir", str(tmp_path / "report")]  # fmt: skip
    r = subprocess.run([*cmd, "--figures"], capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["run"]) == {"clean", "fgsm", "pgd", "worst"}  # named by its run folder
    done = 3 * len(results["run"]["clean"]["scores"])  # one bar: every image of every pass
    assert f"evaluate run: pgd at eps=1/255: 100%|██████████| {done}/{done}" in r.stderr
    # Fig. 6 scores pgd at 2, 4 and 8/255 only: the table scored the clean and 1/255 passes
    assert f"figures: Fig. 6: pgd at eps=8/255: 100%|██████████| {done}/{done}" in r.stderr
    assert (tmp_path / "report" / "fig6_srcc_vs_eps.png").is_file()
    bad = subprocess.run([*cmd[:6], "--attack", "cw"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown attack 'cw'" in bad.stderr
    # named explicitly, twice the same checkpoint under two names
    two = [*cmd[:5], f"a={cmd[5]}", "--checkpoint", f"b={cmd[5]}", "--attack", "fgsm",
           "--out-dir", str(tmp_path / "two")]  # fmt: skip
    r = subprocess.run(two, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert set(json.loads((tmp_path / "two" / "results.json").read_text())) == {"a", "b"}
    assert f"evaluate b: fgsm at eps=1/255: 100%|██████████| {done // 3 * 4}/" in r.stderr
    missing = subprocess.run([*cmd[:5], str(tmp_path / "nope.pt")], capture_output=True, text=True)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr
    # beside it, a model of another split (it trained on these test scenes) or image size
    for name, change, refusal in (
        ("seed1", {"split_seed": 1}, "learned from"),
        ("small", {"image_size": 24}, "was trained at image_size 24, run at 32"),
    ):
        other = dataclasses.replace(cfg, out_dir=str(tmp_path / name), **change)
        own = load_splits("builtin", root, ("train",), seed=other.split_seed, image_size=32)
        Trainer(other, own["train"]).fit()
        r = subprocess.run([*cmd[:6], "--checkpoint", str(tmp_path / name / "last.pt"),
                            "--attack", "fgsm", "--out-dir", str(tmp_path / name / "report")],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 2 and refusal in r.stderr, r.stderr
        assert not (tmp_path / name / "report").exists()
