"""Faults and bad input in training runs: every number of the config checked, a run folder
never silently overwritten or shared, a resumed log without duplicate rows, a non-finite loss
stopping the run with its last checkpoint kept, a resume on another thread count warned about,
a batch BatchNorm cannot train refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from data_fixtures import shared_builtin_root

from cprl_fast.data import load_splits
from cprl_fast.train import TrainConfig, Trainer
from cprl_fast.train.logs import truncate_log
from cprl_fast.train.trainer import check_out_dir, run_folder

SMALL = {"model": "resnet", "model_options": {"arch": "resnet18"}, "image_size": 32,
         "batch_size": 4, "lr": 1e-4}  # fmt: skip


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = shared_builtin_root(tmp_path_factory)
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
        ("val_ratio", 1.0, r"val_ratio must be a number in \[0, 1\)"),
        ("folds", 1, "folds must be an int >= 2"),
        ("fold", 2, "fold=2 needs folds"),
    ],
)
def test_every_number_of_the_config_is_checked(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({key: value})


@pytest.mark.slow
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
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
        assert not (tmp_path / ".last.pt.abc.tmp").exists()  # stale temporary files removed
    assert not (tmp_path / ".lock").exists()


def test_a_run_folder_that_cannot_be_made_is_refused_before_the_data_are_read(tmp_path,
                                                                            monkeypatch):
    from cprl_fast.train import runs

    (tmp_path / "afile").write_text("x")
    check_out_dir(tmp_path / "new" / "deeper")  # missing folders under a folder: fine
    assert not (tmp_path / "new").exists()  # and nothing is made
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "afile")
    with pytest.raises(NotADirectoryError, match="afile/run cannot be created: Not a directory"):
        check_out_dir(tmp_path / "afile" / "run")
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="cannot be written"):
            check_out_dir(tmp_path / "locked" / "run")

    def never(*args, **kwargs):
        raise AssertionError("the data were read before out_dir was checked")

    monkeypatch.setattr(runs, "load_run_splits", never)
    with pytest.raises(NotADirectoryError, match="cannot be created"):
        runs.train_and_test(TrainConfig(**SMALL, out_dir=str(tmp_path / "afile" / "run")))


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
    trainer.train_step = lambda x, y: {"loss": torch.tensor(float("nan"))}  # as a step returns
    with pytest.raises(FloatingPointError, match=r"loss=nan; last.pt holds"):
        trainer.fit(resume=True)
    assert (tmp_path / "last.pt").read_bytes() == kept
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2


def test_random_start_refuses_lo_above_hi():
    from cprl_fast import ops

    with pytest.raises(ValueError, match="lo must be <= hi"):
        ops.random_start(torch.rand(3), 0.1, lo=1.0, hi=0.0)


def test_resume_with_another_thread_count_warns(sets, tmp_path, caplog):
    threads = torch.get_num_threads()
    Trainer(TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=1), sets["train"]).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["threads"] == threads
    state["threads"] = threads + 1  # as if written on a machine with one more thread
    torch.save(state, tmp_path / "last.pt")
    more = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=2)
    with caplog.at_level("WARNING", logger="cprl_fast.train"):
        Trainer(more, sets["train"]).fit(resume=True)
    assert f"written with {threads + 1} CPU threads, this run has {threads}" in caplog.text


def test_a_batch_of_one_under_batchnorm_is_refused_before_training(sets, tmp_path):
    cfg = TrainConfig(**{**SMALL, "batch_size": 1}, out_dir=str(tmp_path), max_steps=1)
    with pytest.raises(ValueError, match=r"batch_size 1 cannot train model 'resnet'.*freeze_bn"):
        Trainer(cfg, sets["train"])
    frozen = TrainConfig(**{**SMALL, "batch_size": 1}, freeze_bn=True, out_dir=str(tmp_path),
                         max_steps=1)  # fmt: skip
    Trainer(frozen, sets["train"]).fit()  # with running statistics a batch of one trains
    assert (tmp_path / "last.pt").is_file()


def test_resume_refuses_a_checkpoint_of_another_split(sets, tmp_path):
    """A run from before validation splits trained on the val scenes too: its recorded split
    counts differ, and resuming it on today's split is refused rather than silently changed."""
    Trainer(TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=1), sets["train"]).fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    split = json.loads(state["split"])
    split["counts"] = {"train_images": 200, "test_images": 50}
    state["split"] = json.dumps(split)
    torch.save(state, tmp_path / "last.pt")
    more = TrainConfig(**SMALL, out_dir=str(tmp_path), max_steps=2)
    with pytest.raises(ValueError, match="was trained on another split: its sides held"):
        Trainer(more, sets["train"]).fit(resume=True)
