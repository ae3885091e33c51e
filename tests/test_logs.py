"""A run folder's logs: validation.csv written after each epoch and cut back with log.csv on a
resume, and curves.png drawn from both, reading only numbers and never through a link."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from data_fixtures import shared_builtin_root

from cprl_fast.data import load_splits
from cprl_fast.data.base import IQADataset
from cprl_fast.io import NotARegularFile
from cprl_fast.train import TrainConfig, Trainer
from cprl_fast.train.logs import VALIDATION_COLUMNS, draw_curves, read_table, running_mean

SMALL = {"model": "resnet", "model_options": {"arch": "resnet18"}, "image_size": 32,
         "batch_size": 4, "lr": 1e-4, "epochs": 2}  # fmt: skip


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """8 training images (2 iterations an epoch at batch 4) and 8 test images to validate on."""
    root = shared_builtin_root(tmp_path_factory)
    s = load_splits("builtin", root, ("train", "test"), image_size=32)
    return tuple(IQADataset(d.name, d.items[:8], d.transform, d.skipped, d.split_info)
                 for d in (s["train"], s["test"]))  # fmt: skip


def _rows(path):
    return [line.split(",") for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_validation_after_each_epoch_cut_back_on_resume_and_drawn(sets, tmp_path):
    train, val = sets
    Trainer(TrainConfig(**SMALL, out_dir=str(tmp_path / "a")), train, val).fit()
    rows = _rows(tmp_path / "a" / "validation.csv")
    assert rows[0] == list(VALIDATION_COLUMNS)
    assert [r[:2] for r in rows[1:]] == [["2", "0"], ["4", "1"]]
    assert all(-1 <= float(r[2]) <= 1 for r in rows[1:])
    png = (tmp_path / "a" / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    # stopped after epoch 0, with a row written after the checkpoint it resumes from
    b = tmp_path / "b"
    Trainer(TrainConfig(**{**SMALL, "max_steps": 2}, out_dir=str(b)), train, val).fit()
    with open(b / "validation.csv", "a") as fh:
        fh.write("3,1,0.9,0.9,0.9,0.1,0.3\n")
    Trainer(TrainConfig(**SMALL, out_dir=str(b)), train, val).fit(resume=True)
    assert (b / "validation.csv").read_text() == (tmp_path / "a" / "validation.csv").read_text()
    # they are the run's: a folder that holds them is not started over unasked
    with pytest.raises(ValueError, match=r"validation\.csv, curves\.png\): pass --resume"):
        Trainer(TrainConfig(**SMALL, out_dir=str(b)), train, val).fit()


def test_running_mean_leaves_out_nans():
    got = running_mean(np.array([1, 2, 3, math.nan, 5.0]), 2)
    np.testing.assert_allclose(got, [1, 1.5, 2.5, 3, 5])
    assert np.isnan(running_mean(np.array([math.nan, math.nan]), 1)).all()
    np.testing.assert_allclose(running_mean(np.arange(4.0), 10), [0, 0.5, 1, 1.5])


def test_curves_read_only_numeric_rows_and_replace_a_planted_link(tmp_path):
    (tmp_path / "log.csv").write_text("step,epoch,l_reg,l_sf\n")
    assert draw_curves(tmp_path) is None and not (tmp_path / "curves.png").exists()
    (tmp_path / "log.csv").write_text("step,epoch,l_reg,l_sf\n1,0,0.5,\n2,0,0.4,\nx,0,1,1\n3,0\n"
                                      "4,0,-0.1,\n")  # fmt: skip
    header, rows = read_table(tmp_path / "log.csv", "training log")
    assert header == ["step", "epoch", "l_reg", "l_sf"] and rows.shape == (3, 4)
    assert np.isnan(rows[:, 3]).all()  # l_sf never logged: no curve
    (tmp_path / "validation.csv").write_text(",".join(VALIDATION_COLUMNS) + "\n"
                                             "2,0,nan,nan,nan,0.1,0.3\n4,1,0.5,0.6,0.4,0.1,0.3\n")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    (tmp_path / "curves.png").symlink_to(victim)
    assert draw_curves(tmp_path) == tmp_path / "curves.png"
    assert victim.read_bytes() == b"keep" and not (tmp_path / "curves.png").is_symlink()
    os.remove(tmp_path / "validation.csv")
    (tmp_path / "validation.csv").symlink_to(victim)
    with pytest.raises(NotARegularFile, match=r"validation log .* is a symbolic link"):
        draw_curves(tmp_path)


def test_a_machine_without_matplotlib_trains_and_is_told_the_figure_is_missing(sets, tmp_path,
                                                                              monkeypatch,
                                                                              caplog):  # fmt: skip
    from cprl_fast import figures

    def missing(**figure):
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.setattr(figures, "new_figure", missing)
    train, val = sets
    cfg = TrainConfig(**{**SMALL, "max_steps": 1}, out_dir=str(tmp_path))
    result = Trainer(cfg, train, val).fit()
    assert set(result) >= {"srcc"} and (tmp_path / "validation.csv").is_file()
    assert not (tmp_path / "curves.png").exists()
    assert f"{tmp_path / 'curves.png'} not drawn: No module named 'matplotlib'" in caplog.text
