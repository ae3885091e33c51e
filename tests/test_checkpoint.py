"""A checkpoint is data, not a program: the model card is validated with bounds before anything is
built, a card that disagrees with its weights is refused naming the key and both shapes, loading
trains and downloads nothing, paths in a card are never written to, a pickle payload is refused
naming what it holds (never suggesting weights_only=False), and a file that holds something else
(a plain state dict, a tensor, a list, a folder) gets one line saying what a checkpoint holds."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch

from cprl_fast.train.checkpoint import load
from cprl_fast.train.runs import card_train_config, load_run_splits, load_trained


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/cprl-fast-pwned",))


def _with_card(tiny_run, tmp_path, name="card.pt", weights=None, **changes):
    state = torch.load(tiny_run / "best.pt", weights_only=True)
    config = json.loads(state["config"])
    for key, value in changes.items():
        if key in ("arch", "bins", "units", "scnn_steps"):
            config.setdefault("model_options", {})[key] = value
        else:
            config[key] = value
    state["config"] = json.dumps(config)
    if weights is not None:
        state["model"] = weights
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_pickle_payloads_are_refused_naming_what_they_hold(tmp_path):
    for obj in (Payload(), {"model": Payload(), "config": "{}"}):
        path = tmp_path / "evil.pt"
        torch.save(obj, path)
        with pytest.raises(RuntimeError) as err:
            load(path)
        text = str(err.value)
        assert "system" in text and "refused" in text and "\n" not in text
        assert "weights_only=False" not in text and "weights_only" not in text
    assert not os.path.exists("/tmp/cprl-fast-pwned")


@pytest.mark.parametrize("obj,what", [
    ({"conv.weight": torch.zeros(2)}, "a plain state dict"),
    (torch.zeros(3), "a tensor"),
    ([1, 2], "a list"),
    ({"model": {"w": torch.zeros(1)}, "config": "[1]"}, "must be a JSON object"),
    ({"model": {"w": torch.zeros(1)}, "config": "{nope"}, "is not JSON"),
    ({"model": {"w": torch.zeros(1)}, "config": "[" * 100_000},  # json: RecursionError
     r"model card \('config'\) is not JSON \(nested too deeply"),
    ({"model": {"w": torch.zeros(1)}, "config": "{}", "split": "{nope"},
     r"split record \('split'\) is not JSON"),
    ({"model": {"w": torch.zeros(1)}, "config": "{}", "split": "[1]"},
     r"split record \('split'\) must be a JSON object, got list"),
])  # fmt: skip
def test_a_file_that_is_no_checkpoint_gets_one_line(tmp_path, obj, what):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=what) as err:
        load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_compressed_archive_is_refused_before_it_is_inflated(tmp_path):
    # torch.load inflates deflated entries: 200 kB would make a 200 MB tensor
    path = tmp_path / "plain.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": "{}"}, path)
    assert load(path)["model"]["w"].shape == (1000,)  # torch.save stores every entry
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename))
    with pytest.raises(RuntimeError, match=rf"cannot read checkpoint {re.escape(str(packed))}: "
                                           r"its entry '.+' is compressed"):  # fmt: skip
        load(packed)


def test_an_exported_program_is_named_as_such_not_as_a_damaged_checkpoint(tmp_path):
    """``export --format pt2`` writes a zip archive too: scored or loaded as a checkpoint, it was
    called "damaged or truncated"."""
    program = torch.export.export(torch.nn.Linear(3, 1), (torch.zeros(2, 3),))
    torch.export.save(program, tmp_path / "best.pt2")
    with pytest.raises(RuntimeError, match=r"cannot read checkpoint .*best\.pt2: it is a "
                       r"torch\.export program or AOTInductor package \(cprl-fast export "
                       r"--format pt2\), not a checkpoint"):  # fmt: skip
        load(tmp_path / "best.pt2")


@pytest.mark.parametrize("name", ["best.pt", "best.safetensors"])
def test_a_fifo_is_refused_never_opened_to_wait(tmp_path, name):
    from cprl_fast.io import NotARegularFile

    fifo = tmp_path / name
    os.mkfifo(fifo)  # opened to read, it would wait for a writer
    with pytest.raises(NotARegularFile, match=re.escape(f"checkpoint {fifo} is not a regular")):
        load(fifo)
    with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoint not found: {fifo}.x")):
        load(f"{fifo}.x")


def test_a_device_is_refused_as_pretrained_weights():
    from cprl_fast.io import NotARegularFile
    from cprl_fast.train.checkpoint import read_tensors

    with pytest.raises(NotARegularFile, match=r"weights /dev/zero is not a regular file"):
        read_tensors("/dev/zero", "weights")  # read, it would never end


@pytest.mark.slow
def test_a_folder_lists_the_checkpoints_in_it(tiny_run):
    with pytest.raises(IsADirectoryError, match=r"is a folder.*best\.pt, last\.pt"):
        load(tiny_run)
    r = subprocess.run([sys.executable, "-m", "cprl_fast_cli", "info", str(tiny_run)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "is a folder" in r.stderr and "best.pt" in r.stderr


@pytest.mark.parametrize("changes,message", [
    ({"image_size": 10**6}, "image_size must be <= 4096"),
    ({"model": "nima", "bins": 10**9}, r"bins must be an integer in \[2, 1000\]"),
    ({"model": "lwta", "units": -1}, r"units must be an integer in \[1, 2048\]"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
    ({"dataset": "../../etc"}, "unknown dataset"),
    ({"root": ["a"]}, "root must be a string"),
    ({"batch_size": 10**12}, "batch_size must be <="),
])  # fmt: skip
def test_the_card_is_validated_with_bounds_before_any_work(tiny_run, tmp_path, changes, message):
    path = _with_card(tiny_run, tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as err:
        load_trained(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_card_that_disagrees_with_its_weights_names_the_key_and_both_shapes(tiny_run, tmp_path):
    path = _with_card(tiny_run, tmp_path, arch="resnet50")
    with pytest.raises(ValueError, match="the model card says arch='resnet50', the weights are "
                       "those of arch='resnet18'"):  # fmt: skip
        load_trained(path)
    path = _with_card(tiny_run, tmp_path, "nima.pt", model="nima", bins=5)
    with pytest.raises(ValueError) as err:
        load_trained(path)
    text = str(err.value)
    assert "model='nima'" in text and "bins=5" in text and "disagrees with the weights" in text
    assert "the card's model has [" in text and "the weights [" in text
    weights = torch.load(tiny_run / "best.pt", weights_only=True)["model"]
    first = next(iter(weights))
    del weights[first]
    with pytest.raises(ValueError, match=f"{first!r} is in the card's model but not in the"):
        load_trained(_with_card(tiny_run, tmp_path, "missing.pt", weights=weights))


def test_loading_trains_and_downloads_nothing(tmp_path, monkeypatch):
    from cprl_fast.models import dbcnn as dbcnn_module
    from cprl_fast.models.registry import build
    from cprl_fast.train import TrainConfig

    model = build("dbcnn")
    options = {"scnn_steps": 1_000_000, "pretrained": "imagenet"}
    cfg = TrainConfig(model="dbcnn", model_options=options, image_size=32)
    path = tmp_path / "dbcnn.pt"
    torch.save({"model": model.state_dict(), "config": json.dumps(dataclasses.asdict(cfg))}, path)

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint ran a pre-training or a download")

    monkeypatch.setattr(dbcnn_module, "pretrain_scnn", refuse)
    monkeypatch.setattr(sys.modules["cprl_fast.models.cprl_resnet"], "imagenet_state", refuse)
    loaded = load_trained(path)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


def test_paths_in_a_card_are_never_written(tiny_run, tmp_path, monkeypatch):
    evil_split = tmp_path / "owned" / "split.json"
    evil_root = tmp_path / "owned-root"
    state = torch.load(_with_card(tiny_run, tmp_path, split_file=str(evil_split),
                                  root=str(evil_root)), weights_only=True)  # fmt: skip
    cfg = card_train_config(state, "card.pt")
    builtin_root = json.loads(torch.load(tiny_run / "best.pt", weights_only=True)["config"])["root"]
    monkeypatch.setenv("CPRL_FAST_CACHE", builtin_root)  # where the data are already
    test = load_run_splits(cfg, ("test",), from_card=True)["test"]
    assert len(test) > 0
    assert not evil_split.exists() and not evil_split.parent.exists() and not evil_root.exists()
    # a user who names the paths gets them written, as before
    cfg.split_file, cfg.root = str(tmp_path / "mine.json"), builtin_root  # data already there
    load_run_splits(cfg, ("test",), from_card=False)
    assert (tmp_path / "mine.json").is_file()
