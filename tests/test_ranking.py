"""Ranking pretraining (cprl_fast.train.ranking): its batches, its hinge, the weights file every
ResNet model takes as ``pretrained``, and the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cprl_fast.models.registry import build
from cprl_fast.train.ranking import (
    VERSIONS,
    RankingConfig,
    pretrain_by_ranking,
    ranking_batch,
    ranking_hinge,
)

SMALL = RankingConfig(steps=2, crops=2, crop=16, kinds=("blur", "noise"))


def _photo(seed: int, size=(40, 36)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.random((-(-size[1] // 4), -(-size[0] // 4), 3))  # whole blocks, then cut
    big = np.kron(base, np.ones((4, 4, 1)))[: size[1], : size[0]]  # blocks: some structure
    return Image.fromarray((big * 255).astype(np.uint8))


@pytest.fixture
def refs(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(2):
        _photo(i).save(folder / f"scene{i}.png")
    return folder


def test_batch_shapes_order_and_determinism():
    photos = [_photo(0), _photo(1)]
    x, st = ranking_batch(photos, SMALL, np.random.default_rng(3))
    assert x.shape == (SMALL.crops * VERSIONS, 3, 16, 16) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    assert st.shape == (SMALL.crops, VERSIONS)
    assert (st[:, 0] == -1).all() and (st[:, 1:] >= 0).all() and (st[:, 1:] <= 4).all()
    assert (st.diff(dim=1) >= 0).all()
    again = ranking_batch(photos, SMALL, np.random.default_rng(3))
    torch.testing.assert_close(again[0], x)
    torch.testing.assert_close(again[1], st)


def test_references_past_the_memory_budget_are_decoded_at_each_use(refs, caplog):
    """However many photographs, the pretraining keeps at most its budget of them decoded; the
    others give the same pixels, read again, so the batches are the same."""
    from cprl_fast.train.ranking import RankingBatches, load_references

    every = load_references(refs, 20)
    assert every.kept == 2 and every.nbytes == 2 * 40 * 36 * 3
    with caplog.at_level("WARNING"):
        one = load_references(refs, 20, max_bytes=40 * 36 * 3)
    assert one.kept == 1 and "1 of 2 reference photographs kept decoded" in caplog.text
    assert len(one) == 2 and one[-1].size == (40, 36)
    for a, b in zip(one, every, strict=True):  # iteration stops at the end
        assert a.tobytes() == b.tobytes()
    with pytest.raises(IndexError):
        one[2]
    for k in range(3):  # RankingBatches keeps the sequence, not a list of every image
        x, st = RankingBatches(one, SMALL)[k]
        want = RankingBatches(every, SMALL)[k]
        torch.testing.assert_close(x, want[0])
        torch.testing.assert_close(st, want[1])
    assert RankingBatches(one, SMALL).refs is one


def test_a_worker_draws_the_batches_the_training_thread_would():
    from cprl_fast.train.ranking import RankingTerm

    photos, cfg = [_photo(0), _photo(1)], dataclasses.replace(SMALL, seed=4)
    here, ahead = RankingTerm(photos, cfg, workers=0), RankingTerm(photos, cfg, workers=1)
    cpu = torch.device("cpu")
    # in sequence, then a repeated step and a jump (a resume) that restart the worker
    for t in (0, 1, 2, 2, 7, 8):
        x, st = ahead.batch(t, cpu)
        want = ranking_batch(photos, cfg, np.random.default_rng([4, t]))
        assert torch.equal(x, want[0]) and torch.equal(st, want[1]), t
        assert torch.equal(x, here.batch(t, cpu)[0])
    assert not torch.equal(ahead.batch(9, cpu)[0], ahead.batch(10, cpu)[0])


def test_hinge_is_zero_in_order_and_pushes_toward_it():
    st = torch.tensor([[-1.0, 0.5, 1.0, 2.0, 3.5]])
    ordered = torch.tensor([[0.9, 0.7, 0.5, 0.3, 0.1]])
    assert ranking_hinge(ordered, st, 0.05) == 0
    reversed_ = ordered.flip(1).requires_grad_()
    loss = ranking_hinge(reversed_, st, 0.05)
    loss.backward()
    assert loss > 0
    # descending the hinge raises the clean version's score and lowers the most distorted one
    assert reversed_.grad[0, 0] < 0 < reversed_.grad[0, -1]


def test_weights_file_loads_into_every_resnet_model(refs, tmp_path):
    out = tmp_path / "ranking.pt"
    result = pretrain_by_ranking(refs, out, SMALL, progress=False)
    assert result.path == out and np.isfinite(result.final_hinge)
    saved = torch.load(out, weights_only=True)
    assert saved["meta"]["pretraining"] == "ranking" and saved["meta"]["steps"] == 2
    plain = build("resnet", arch="resnet18", pretrained=str(out), input_norm="lcn")
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(plain.backbone.state_dict()[key], value)
    # the CA blocks take the same weights
    build("cprl", arch="resnet18", pretrained=str(out), input_norm="lcn")
    again = pretrain_by_ranking(refs, tmp_path / "again.pt", SMALL, progress=False)
    assert again.final_hinge == result.final_hinge  # seeded: the same run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arch": "resnet152"}, "arch must be one of resnet18, .* got 'resnet152'"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"crops": 1.5}, "crops must be an integer >= 1"),
        ({"crop": 8}, "crop must be an integer side >= 16 px"),
        ({"kinds": ("blur", "lens")}, "kinds must name types of .* got lens"),
        ({"lr": float("nan")}, "lr must be a positive finite number"),
        ({"margin": -1.0}, "margin must be a finite number >= 0"),
        # NumPy's "expected non-negative integer" and torch's "Overflow when unpacking long long"
        ({"seed": -1}, r"seed must be an integer from 0 to 2\*\*63 - 1, got -1"),
        ({"seed": 2**64}, r"seed must be an integer from 0 to 2\*\*63 - 1"),
    ],
)
def test_bad_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        RankingConfig(**change)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (gpu_check's test step)")
def test_cuda_pretraining_draws_the_cpus_batches_and_writes_cpu_tensors(refs, tmp_path):
    on_cpu = pretrain_by_ranking(refs, tmp_path / "cpu.pt", SMALL, progress=False)
    on_gpu = pretrain_by_ranking(refs, tmp_path / "gpu.pt", SMALL, progress=False,
                                 device="cuda")  # fmt: skip
    assert on_gpu.final_hinge == pytest.approx(on_cpu.final_hinge, abs=1e-3)
    a, b = (torch.load(r.path, weights_only=True)["state_dict"] for r in (on_cpu, on_gpu))
    assert all(v.device.type == "cpu" for v in b.values())
    for key in a:  # two AdamW steps from the same weights on the same batches
        torch.testing.assert_close(b[key], a[key], atol=5e-3, rtol=0)


def test_log_dir_holds_every_steps_hinge_and_their_curve(refs, tmp_path, monkeypatch):
    """log.csv gets every step's hinge (read to the host in blocks of LOG_EVERY, here 4: 6
    steps are a full block and a part), curves.png their curve; logging changes nothing in the
    run."""
    import cprl_fast.train.ranking as ranking
    from cprl_fast.train.logs import read_table

    monkeypatch.setattr(ranking, "LOG_EVERY", 4)
    cfg = dataclasses.replace(SMALL, steps=6)
    logged = pretrain_by_ranking(refs, tmp_path / "a.pt", cfg, progress=False,
                                 log_dir=tmp_path / "logs")  # fmt: skip
    header, rows = read_table(tmp_path / "logs" / "log.csv", "log")
    assert header == ["step", "rank_hinge"]
    assert rows[:, 0].tolist() == list(range(1, cfg.steps + 1))
    np.testing.assert_allclose(rows[:, 1], logged.hinges, rtol=1e-5)
    assert len(logged.hinges) == cfg.steps and logged.final_hinge == logged.hinges[-1]
    assert logged.curves == tmp_path / "logs" / "curves.png"
    assert logged.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = pretrain_by_ranking(refs, tmp_path / "b.pt", cfg, progress=False)
    assert plain.hinges == logged.hinges and plain.curves is None
    assert logged.mean_hinge(2) == pytest.approx(sum(logged.hinges[:2]) / 2)
    assert logged.mean_hinge(2, last=True) == pytest.approx(sum(logged.hinges[-2:]) / 2)


def test_a_non_finite_hinge_stops_before_the_weights_are_written(refs, tmp_path, monkeypatch,
                                                                 capsys):  # fmt: skip
    import cprl_fast.train.ranking as ranking

    real = ranking.ranking_hinge

    calls = []

    def poisoned(scores, strengths, margin):  # finite at step 1, NaN from step 2
        calls.append(1)
        hinge = real(scores, strengths, margin)
        return hinge if len(calls) == 1 else hinge * float("nan")

    monkeypatch.setattr(ranking, "ranking_hinge", poisoned)
    with pytest.raises(FloatingPointError, match=r"stopped at step 2: hinge nan .*w\.pt was not"):
        pretrain_by_ranking(refs, tmp_path / "w.pt", SMALL, progress=False,
                            log_dir=tmp_path / "logs")  # fmt: skip
    assert not (tmp_path / "w.pt").exists()
    lines = (tmp_path / "logs" / "log.csv").read_text().splitlines()
    assert lines[0] == "step,rank_hinge" and [ln.split(",")[0] for ln in lines[1:]] == ["1"]
    # the command line: one line, and status 1 (the run failed; nothing was misused)
    from cprl_fast_cli import main

    calls.clear()
    assert main(["pretrain", str(refs), "--out", str(tmp_path / "w.pt"), "--steps", "2",
                 "--crops", "2", "--crop", "16", "--distortions", "blur,noise"]) == 1
    err = capsys.readouterr().err  # besides the progress bar's lines
    lines = [ln for ln in err.replace("\r", "\n").splitlines()
             if ln.strip() and not ln.startswith(("reading the references:",
                                                  "ranking pretraining:"))]  # fmt: skip
    assert len(lines) == 1 and not (tmp_path / "w.pt").exists(), err
    assert lines[0].startswith("cprl-fast pretrain: ranking pretraining stopped at step 2: hinge")


def test_a_link_planted_at_the_log_is_refused_and_its_target_kept(refs, tmp_path):
    from cprl_fast.io import NotARegularFile

    (tmp_path / "logs").mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    (tmp_path / "logs" / "log.csv").symlink_to(target)
    with pytest.raises(NotARegularFile, match=r"pretraining log .*log\.csv is a symbolic link"):
        pretrain_by_ranking(refs, tmp_path / "w.pt", SMALL, progress=False,
                            log_dir=tmp_path / "logs")  # fmt: skip
    assert target.read_text() == "precious" and not (tmp_path / "w.pt").exists()


def test_references_too_small_are_named(tmp_path):
    _photo(0, size=(20, 20)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match=r"tiny\.png is 20 x 20 px: ranking crops need at least"):
        pretrain_by_ranking(tmp_path / "tiny.png", tmp_path / "w.pt", SMALL, progress=False)
    assert not (tmp_path / "w.pt").exists()


def test_command_line(refs, tmp_path, capsys):
    from cprl_fast_cli import main

    out = tmp_path / "w.pt"
    argv = ["pretrain", str(refs), "--out", str(out), "--steps", "2", "--crops", "2", "--crop",
            "16", "--distortions", "blur,noise"]  # fmt: skip
    assert main(argv) == 0
    assert "--pretrained" in capsys.readouterr().out and out.is_file()
    assert main(argv) == 2  # exists: refused without --overwrite, the file kept
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert main([*argv[:-2], "--distortions", "lens"]) == 2
    assert "--distortions must name types" in capsys.readouterr().err
    logs, again = tmp_path / "logs", [*argv[:3], str(tmp_path / "l.pt"), *argv[4:]]
    assert main([*again, "--log-dir", str(logs)]) == 0
    said = capsys.readouterr().out
    assert f"curves: {logs / 'curves.png'}" in said and "over the first 2 steps" in said
    (tmp_path / "l.pt").unlink()  # the logs are outputs too: refused before any work
    assert main([*again, "--log-dir", str(logs)]) == 2
    assert "--log-dir" in capsys.readouterr().err and not (tmp_path / "l.pt").exists()
    # the device is checked before any work
    other = tmp_path / "other.pt"
    for device, why in (("tpu", "device must be cpu, cuda or cuda:N, got 'tpu'"),
                        ("cuda:99", "device is 'cuda:99', but ")):  # fmt: skip
        assert main([*argv[:3], str(other), *argv[4:], "--device", device]) == 2
        assert why in capsys.readouterr().err and not other.exists()


def test_weights_for_another_arch_are_refused_by_name(refs, tmp_path):
    out = pretrain_by_ranking(refs, tmp_path / "w.pt", SMALL, progress=False).path
    with pytest.raises(ValueError, match=r"are for resnet18, not resnet34: use arch resnet18"):
        build("resnet", arch="resnet34", pretrained=str(out), input_norm="lcn")
    # so are weights pretrained on other inputs than the model reads (lcn, imagenet's default)
    for name in ("resnet", "cprl", "sat", "nima"):
        with pytest.raises(ValueError, match=r"pretrained on input_norm 'lcn', this model reads "
                                             r"'imagenet': use input_norm 'lcn'"):
            build(name, arch="resnet18", pretrained=str(out))
    bare = tmp_path / "bare.pt"  # a state dict without the record: the shapes are compared
    torch.save(torch.load(out, weights_only=True)["state_dict"], bare)
    with pytest.raises(ValueError, match=r"pretrained weights do not fit this resnet50: .* is"):
        build("resnet", arch="resnet50", pretrained=str(bare))


# -- the hinge beside every supervised step (TrainConfig.rank_weight) ---------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A dataset of three scenes written by synthesize: images/ and refs/<scene>.png."""
    from cprl_fast.data import synthesize
    from cprl_fast.data.synthetic import MIN_SIZE

    photos = tmp_path_factory.mktemp("joint_refs")
    for i in range(3):
        _photo(i, size=(MIN_SIZE, MIN_SIZE)).save(photos / f"scene{i}.png")
    return synthesize(photos, tmp_path_factory.mktemp("joint") / "ds", ["blur", "noise"],
                      size=MIN_SIZE, progress=False)  # fmt: skip


def _joint_config(made, tmp_path, **change):
    from cprl_fast.train import TrainConfig

    settings = {"dataset": "synthetic", "root": str(made), "model": "resnet",
                "model_options": {"arch": "resnet18", "input_norm": "lcn", "patch": 32},
                "image_size": 96, "train_crop": 32, "batch_size": 4, "lr": 1e-3, "val_ratio": 0.0,
                "folds": 3, "fold": 0, "rank_weight": 1.0, "out_dir": str(tmp_path / "run"),
                "split_file": str(tmp_path / "split.json")}  # fmt: skip
    return TrainConfig(**{**settings, **change})


def _trainer(cfg):
    from cprl_fast.train import Trainer
    from cprl_fast.train.runs import load_run_splits

    return Trainer(cfg, load_run_splits(cfg, ("train",))["train"])


def test_scene_references_are_the_split_scenes_own(made, tmp_path):
    import shutil

    from cprl_fast.data import load_items
    from cprl_fast.data.synthetic import scene_references

    items, _ = load_items("synthetic", made)
    some = [it for it in items if it.scene != "scene1"]
    assert scene_references(some) == [made / "refs" / "scene0.png", made / "refs" / "scene2.png"]
    copy = tmp_path / "ds"
    shutil.copytree(made, copy)
    (copy / "refs" / "scene2.png").unlink()
    moved = [dataclasses.replace(it, path=str(copy / Path(it.path).relative_to(made)))
             for it in some]  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"scene 'scene2': .*scene2\.png does not exist"):
        scene_references(moved)


def test_rank_weight_adds_the_hinge_of_the_training_scenes(made, tmp_path):
    from cprl_fast.train.ranking import WithRankingHinge

    trainer = _trainer(_joint_config(made, tmp_path))
    assert isinstance(trainer.objective, WithRankingHinge)
    assert trainer.objective.columns == ("loss", "rank_hinge")
    train_scenes = sorted({it.scene for it in trainer.train_set.items})
    term = trainer.objective.term
    assert len(train_scenes) == 2 and len(term.refs) == 2  # the test scene's photograph is out
    # a step's batch is a function of (seed, step): a resumed run draws the same
    trainer.model.eval()
    with torch.no_grad():
        first = term(trainer.model, 5, torch.device("cpu"))
        assert term(trainer.model, 5, torch.device("cpu")) == first
        assert term(trainer.model, 6, torch.device("cpu")) != first
    # the hinge moves the weights: one step with it differs from the same step without it
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4)
    plain = _trainer(_joint_config(made, tmp_path, rank_weight=0.0))
    losses = trainer.train_step(x, y)
    plain_losses = plain.train_step(x, y)
    assert set(losses) == {"loss", "rank_hinge"} and set(plain_losses) == {"loss"}
    assert losses["rank_hinge"] > 0
    torch.testing.assert_close(losses["loss"], plain_losses["loss"])  # same weights before
    moved = [not torch.equal(a, b) for a, b in
             zip(trainer.model.parameters(), plain.model.parameters(), strict=True)]  # fmt: skip
    assert any(moved)


def test_rank_weight_runs_through_fit_logs_its_column_and_stops_its_workers(made, tmp_path):
    import csv
    import multiprocessing

    trainer = _trainer(_joint_config(made, tmp_path, max_steps=2, num_workers=1))
    before = set(multiprocessing.active_children())
    trainer.fit()
    with open(tmp_path / "run" / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["rank_hinge"]) >= 0 for r in rows)
    assert set(multiprocessing.active_children()) <= before  # the hinge's worker stopped
    assert trainer.objective.term.batch(5, torch.device("cpu"))[0].shape[0] > 0  # starts again
    trainer.objective.close()
    assert set(multiprocessing.active_children()) <= before


def test_rank_weight_refusals_are_named(made, tmp_path):
    with pytest.raises(ValueError, match="rank_weight needs train_crop"):
        _joint_config(made, tmp_path, train_crop=None)
    with pytest.raises(ValueError, match=r"rank_references must be a path \(text\), got 3"):
        _joint_config(made, tmp_path, rank_references=3)
    with pytest.raises(ValueError, match="rank_weight must be >= 0"):
        _joint_config(made, tmp_path, rank_weight=-1.0)
    with pytest.raises(ValueError, match=r"rank_weight needs an objective of one loss .* 'pns'"):
        _trainer(_joint_config(made, tmp_path, model="cprl", model_options={"arch": "resnet18"}))
    with pytest.raises(FileNotFoundError, match=r"reference not found: .*nowhere"):
        _trainer(_joint_config(made, tmp_path, rank_references=str(tmp_path / "nowhere")))


@pytest.mark.slow  # generates the built-in dataset when it runs alone: ~10 s
def test_command_line_ranks_the_training_scenes_of_a_split(tmp_path_factory, tmp_path, capsys,
                                                          monkeypatch):  # fmt: skip
    """--dataset/--folds/--fold: the references are the scenes cprl-fast train trains on for
    that split, never a test scene's."""
    from data_fixtures import shared_builtin_root

    from cprl_fast.train import TrainConfig
    from cprl_fast.train.runs import load_run_splits
    from cprl_fast_cli import main, parser
    from cprl_fast_cli.pretrain import _references

    root = str(shared_builtin_root(tmp_path_factory))
    argv = ["pretrain", "--dataset", "builtin", "--root", root, "--folds", "3", "--fold", "1",
            "--out", str(tmp_path / "w.pt"), "--steps", "1", "--crops", "2", "--crop", "16"]
    paths, source = _references(parser().parse_args(argv))
    chosen = {Path(f).stem for f in paths}
    cfg = TrainConfig(dataset="builtin", root=root, folds=3, fold=1, val_ratio=0.0,
                      split_file=str(tmp_path / "split.json"))  # fmt: skip
    splits = load_run_splits(cfg, ("train", "test"))
    assert chosen == {it.scene for it in splits["train"].items}
    assert not chosen & {it.scene for it in splits["test"].items}
    assert source.dataset == "builtin" and source.scenes == tuple(sorted(chosen))
    assert main(argv) == 0 and (tmp_path / "w.pt").is_file()
    assert main([*argv[:1], str(tmp_path), *argv[1:], "--overwrite"]) == 2
    assert "REFERENCES) or --dataset, one of the two" in capsys.readouterr().err
    # the weights record the scenes: a training of that fold starts from them (with a
    # validation side too), one of another fold, which tests on some of them, is refused
    from cprl_fast.train import Trainer

    options = {"arch": "resnet18", "input_norm": "lcn", "pretrained": str(tmp_path / "w.pt")}
    for fold, val_ratio in ((1, 0.0), (1, 0.5)):
        run = dataclasses.replace(cfg, model="resnet", model_options=options, fold=fold,
                                  val_ratio=val_ratio, split_file=None)  # fmt: skip
        sets = load_run_splits(run, ("train", "val"))
        Trainer(run, sets["train"], sets["val"])
    other = dataclasses.replace(cfg, model="resnet", model_options=options, fold=0,
                                split_file=None)  # fmt: skip
    sets = load_run_splits(other, ("train", "val", "test"))
    tested = {it.scene for it in sets["test"].items}
    assert tested & chosen  # fold 0's test scenes are among fold 1's training scenes
    with pytest.raises(ValueError, match=r"w\.pt were pretrained on the reference photographs "
                                         r"of \d scene\(s\) this run tests on"):
        Trainer(other, sets["train"], sets["val"])
    # so is a training on another dataset of the same photographs (builtin-v2's scenes are
    # builtin's; here another dataset is made one of the family, to need no builtin-v2)
    from cprl_fast.data.base import LOADERS, IQADataset
    from cprl_fast.train.ranking import check_pretraining_scenes

    info = LOADERS.info
    monkeypatch.setattr(LOADERS, "info", lambda name: {**info(name), "photographs": "same"}
                        if name in ("builtin", "live") else info(name))  # fmt: skip
    as_live = {k: IQADataset("live", sets[k].items, None) for k in ("train", "val")}
    with pytest.raises(ValueError, match=r"of \d scene\(s\) this run tests on"):
        check_pretraining_scenes(tmp_path / "w.pt", as_live["train"], as_live["val"])
