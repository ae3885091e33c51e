"""Faults and bad input in training runs: every number of the config checked, a run folder
never silently overwritten or shared, a resumed log without duplicate rows, a non-finite loss
stopping the run with its last checkpoint kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from cprl_fast.data import load_splits
from cprl_fast.train import TrainConfig, Trainer
from cprl_fast.train.trainer import run_folder, truncate_log

SMALL = {"model": "resnet", "model_options": {"arch": "resnet18"}, "image_size": 32,
         "batch_size": 4, "lr": 1e-4}  # fmt: skip


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtin")
    return load_splits("builtin", root, ("train", "test"), image_size=32)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("clip_grad", -1.0, "clip_grad must be > 0"),
        ("lr", float("nan"), "lr must be a finite float"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("epochs", "2", "epochs must be a finite int"),
        ("batch_size", 2.5, "batch_size must be a finite int"),
        ("weight_decay", -0.1, "weight_decay must be >= 0"),
        ("max_steps", -1, "max_steps must be >= 0"),
    ],
)
def test_every_number_of_the_config_is_checked(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({key: value})


def test_a_run_folder_is_not_overwritten_silently(sets, tmp_path):
    cfg = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=1)
    Trainer(cfg, sets["train"], sets["test"]).fit()
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run .*--resume.*--overwrite"):
        Trainer(cfg, sets["train"], sets["test"]).fit()
    assert (tmp_path / "last.pt").read_bytes() == before
    Trainer(cfg, sets["train"], sets["test"]).fit(overwrite=True)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and the new run's one iteration


def test_a_second_trainer_cannot_share_the_folder(tmp_path):
    with run_folder(tmp_path):
        with pytest.raises(RuntimeError, match="in use by another trainer"), run_folder(tmp_path):
            pass
    # a lock whose process is gone is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (tmp_path / ".lock").write_text(dead)
    (tmp_path / ".last.pt.abc.tmp").write_text("interrupted write")
    with run_folder(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
        assert not (tmp_path / ".last.pt.abc.tmp").exists()  # stale temporary files removed
    assert not (tmp_path / ".lock").exists()


def test_resume_without_a_checkpoint_and_a_log_truncated_to_it(sets, tmp_path):
    cfg = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=2)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(cfg, sets["train"], sets["test"]).fit(resume=True)
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,loss\n1,0,0.5\n2,0,0.4\n3,0,0.3\n")  # rows after a checkpoint
    truncate_log(log, 2)
    assert log.read_text() == "step,epoch,loss\n1,0,0.5\n2,0,0.4\n"


def test_a_non_finite_loss_stops_the_run_and_keeps_last_pt(sets, tmp_path):
    cfg = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=2, epochs=1)
    Trainer(cfg, sets["train"], sets["test"]).fit()
    kept = (tmp_path / "last.pt").read_bytes()
    more = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=4, epochs=1)
    trainer = Trainer(more, sets["train"], sets["test"])
    trainer.train_step = lambda x, y: {"loss": float("nan")}
    with pytest.raises(FloatingPointError, match=r"loss=nan; last.pt holds"):
        trainer.fit(resume=True)
    assert (tmp_path / "last.pt").read_bytes() == kept
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cprl_fast.cli", *args], capture_output=True,
                          text=True)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batch-size", "0"], "batch_size must be >= 1"),
        (["train", "--clip-grad", "-1"], "clip_grad must be > 0"),
        (["train", "--model", "resnet", "--b", "0.3"], "unknown config option 'b'"),
        (["evaluate", "--checkpoint", "nope.pt"], "checkpoint not found: nope.pt"),
        (["evaluate", "--checkpoint", "x.pt", "--eps=-8/255"], "eps must be finite and >= 0"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message, tmp_path):
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_train_resume_without_a_checkpoint_is_one_line(tmp_path):
    r = _cli("train", "--resume", "--out-dir", str(tmp_path / "run"), "--image-size", "32")
    assert r.returncode == 2 and "nothing to resume" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_non_finite_and_out_of_scale_scores_are_refused(tmp_path):
    import csv

    from data_fixtures import make_livec_pyiqa

    from cprl_fast.data import DatasetFormatError, load_items

    for bad, message in (("nan", "has a non-finite score nan"), ("150", "outside the dataset")):
        root = tmp_path / bad
        make_livec_pyiqa(root, extra=5)
        meta = root / "meta_info_LIVEChallengeDataset.csv"
        rows = list(csv.reader(meta.open()))
        rows[9][1] = bad  # 201.bmp: the second image after the header and t1..t7
        with meta.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        with pytest.raises(
            DatasetFormatError, match=rf"{meta.name}: item 2 \(201.bmp\) .*{message}"
        ):
            load_items("livec", root)


def test_random_start_refuses_lo_above_hi():
    from cprl_fast import ops

    with pytest.raises(ValueError, match="lo must be <= hi"):
        ops.random_start(torch.rand(3), 0.1, lo=1.0, hi=0.0)
