"""Every user error of the command line is one line on stderr naming the option, file or value
and what is expected, with exit status 2 and no traceback (a traceback only with --debug)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from cprl_fast.images import ImageTooLarge, image_suffixes
from cprl_fast_cli import error_line


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "cprl_fast_cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def built_in_cache(tmp_path_factory):
    """An environment whose built-in data are already generated: an error found after the data
    are read must not depend on whether an earlier test generated them."""
    import os

    from data_fixtures import shared_builtin_root

    from cprl_fast.data.builtin import generate

    root = shared_builtin_root(tmp_path_factory)
    generate(root, "builtin-v1")
    return {**os.environ, "CPRL_FAST_CACHE": str(root)}


#: a tqdm progress line ("  4%|▎    | 9/250 [00:00<00:16, 14.68img/s]"), in any unit
PROGRESS = re.compile(r"\| *\d+/\d+ \[")


def assert_one_line(r, message: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not PROGRESS.search(line)]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    (d / "empty.pt").write_bytes(b"")
    torch.save({"a": torch.ones(1000)}, d / "full.pt")
    (d / "cut.pt").write_bytes((d / "full.pt").read_bytes()[:1500])
    (d / "noise.pt").write_bytes(bytes(range(256)) * 3)
    torch.save({"x": _Evil()}, d / "evil.pt")
    (d / "afile").write_text("x")
    return d


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batch-size", "0"], "batch_size must be >= 1"),
        (["train", "--clip-grad", "-1"], "clip_grad must be > 0"),
        (["train", "--val-ratio", "1"], "val_ratio must be a number in [0, 1)"),
        (["train", "--model", "resnet", "--b", "0.3"], "unknown config option 'b'"),
        (["train", "--device", "bogus"], "device must be cpu, cuda or cuda:N, got 'bogus'"),
        (["train", "--arch", "bogus"], "arch must be one of resnet18"),
        (["train", "--placement", "bogus"], "placement must be 'last', 'all' or a list"),
        (["evaluate", "--checkpoint", "nope.pt"], "checkpoint not found: nope.pt"),
        (["evaluate", "--checkpoint", "a="], "--checkpoint a=: no path after '=' (NAME=PATH)"),
        (["audit", "--checkpoint", "x.pt", "--image-size", "64"],
         "--image-size is for --module models: a checkpoint is audited at the image size"),
        (["evaluate", "--checkpoint", "x.pt", "--eps=-8/255"], "eps must be finite and >= 0"),
    ],
)
@pytest.mark.slow
def test_bad_options(args, message, built_in_cache):
    assert_one_line(_cli(*args, env=built_in_cache), message)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.pt", "cannot read checkpoint empty.pt: the file is empty"),
        ("cut.pt", "cannot read checkpoint cut.pt: not a PyTorch checkpoint"),
        ("noise.pt", "cannot read checkpoint noise.pt: not a PyTorch checkpoint"),
        ("evil.pt", "cannot read checkpoint evil.pt: refused: it holds a Python object (print)"),
    ],
)
@pytest.mark.slow
def test_unreadable_checkpoints(files, name, message):
    r = _cli("evaluate", "--checkpoint", name, cwd=files)
    assert_one_line(r, message)
    assert "this must never run" not in r.stdout + r.stderr


@pytest.mark.slow
def test_a_bad_device_is_named_before_the_checkpoint_is_read(files):
    assert_one_line(_cli("evaluate", "--checkpoint", "empty.pt", "--device", "bogus", cwd=files),
              "device must be cpu, cuda or cuda:N, got 'bogus'")  # fmt: skip


@pytest.mark.slow
def test_an_output_folder_under_a_file(files, tmp_path):
    import os

    cache = tmp_path / "cache"  # empty: the check must come before the data are generated
    r = _cli("train", "--out-dir", "afile/run", "--image-size", "32", "--max-steps", "1",
             cwd=files, env={**os.environ, "CPRL_FAST_CACHE": str(cache)})  # fmt: skip
    assert_one_line(r, "out_dir afile/run cannot be created: Not a directory")
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.slow
def test_config_files(files):
    (files / "list.json").write_text("[1, 2]")
    assert_one_line(_cli("train", "--config", "list.json", cwd=files),
              "config file list.json must hold an object of options, got a list")  # fmt: skip
    (files / "str.json").write_text('{"epochs": "2"}')
    assert_one_line(_cli("train", "--config", "str.json", cwd=files), "epochs must be a finite int")
    import os

    os.mkfifo(files / "fifo.json")  # read, it would wait for a writer for ever
    assert_one_line(_cli("train", "--config", "fifo.json", cwd=files),
                    "config file fifo.json is not a regular file")  # fmt: skip
    assert_one_line(_cli("train", "--config", "nope.toml", cwd=files),
                    "config file not found: nope.toml")  # fmt: skip


@pytest.mark.slow
def test_train_resume_without_a_checkpoint(tmp_path):
    r = _cli("train", "--resume", "--out-dir", str(tmp_path / "run"), "--image-size", "32")
    assert_one_line(r, "nothing to resume")


@pytest.mark.slow
def test_debug_shows_the_traceback(files):
    r = _cli("--debug", "evaluate", "--checkpoint", "empty.pt", cwd=files)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_a_run_of_zero_steps_lists_no_checkpoint(tmp_path):
    r = _cli("train", "--model", "resnet", "--arch", "resnet18", "--image-size", "32",
             "--max-steps", "0", "--root", str(tmp_path / "data"), "--out-dir",
             str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["checkpoints"] == [] and "test" not in summary
    assert not (tmp_path / "run" / "last.pt").exists()


def test_every_help_renders_without_a_literal_percent_pair(capsys):
    from cprl_fast_cli import COMMANDS, main

    for command in (None, *COMMANDS):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"] if command else ["--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "usage: cprl-fast" in text and "%%" not in text, command


@pytest.mark.parametrize("args,message", [
    (["train", "--epochz", "3"], "unrecognized arguments: --epochz"),
    (["audit", "--module", "m:f", "--certify-n", "2.5"],
     "argument --certify-n: must be an integer >= 1, got '2.5'"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["score"], "the following arguments are required"),
    # counts: one argparse type for every command (options.positive_int)
    (["audit", "--module", "m:f", "--batch-size", "0"],
     "argument --batch-size: must be an integer >= 1, got '0'"),
    (["score", "x.png", "--model", "m.pt", "--batch-size", "x"],
     "argument --batch-size: must be an integer >= 1, got 'x'"),
    (["study", "--certify-n", "-3"], "argument --certify-n: must be an integer >= 1, got '-3'"),
    (["synthesize", "refs", "--out", "o", "--workers", "0"],
     "argument --workers: must be an integer >= 1, got '0'"),
])  # fmt: skip
def test_argument_errors_are_one_line(capsys, args, message):
    from cprl_fast_cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "usage:" not in err, err


@pytest.mark.parametrize("args,message", [
    (["--certify", "8"], "--certify must be at most 1 for images in [0, 1] (pixel units: 1/255 "
                         "is one grey level), got 8; 8 grey levels is 8/255"),
    (["--certify", "0.1,x"], "--certify must be a number or a fraction like 1/255, got 'x'"),
    (["--certify-feature", "-1"], "--certify-feature must be a finite number > 0, got -1.0"),
    (["--certify", "0.25,1/4"], "--certify must give each noise level once, got '0.25,1/4'"),
    # feature units have no cap: 2 passes, and the next check speaks
    (["--certify-feature", "2"], "--certify-feature needs --certify-layer"),
])  # fmt: skip
def test_audit_noise_levels_are_checked_before_the_model_is_loaded(capsys, args, message):
    from cprl_fast_cli import main

    assert main(["audit", "--module", "no_such_module:f", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("args", [
    ["reproduce", "--dataset", "builtin", "--attack", "fgsm,transfer"],  # before any training
    ["evaluate", "--checkpoint", "nope.pt", "--attack", "transfer"],
    ["audit", "--module", "no_such_module:f", "--attack", "transfer"],  # no --transfer-from
])  # fmt: skip
def test_the_transfer_attack_without_its_source_is_refused_before_any_work(capsys, args,
                                                                          tmp_path):  # fmt: skip
    from cprl_fast_cli import main

    assert main([*args, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--attack transfer crafts its images on another model" in err
    assert "--transfer-from CKPT" in err and not (tmp_path / "out").exists()


def test_error_messages_escape_control_characters(capsys, tmp_path):
    from cprl_fast_cli import main

    assert main(["info", str(tmp_path / "evil\x1b[2J\r.pt")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "evil\\x1b[2J\\r.pt" in err
    # a newline in a name: the whole name, escaped, where a cut at the newline named "a"
    assert main(["info", str(tmp_path / "a\nb.pt")]) == 2
    assert capsys.readouterr().err == f"cprl-fast info: checkpoint not found: {tmp_path}/a\\nb.pt\n"


def test_score_refuses_folders_with_no_image_file_before_loading_the_model(capsys, tmp_path):
    from cprl_fast_cli import main

    (tmp_path / "notes.txt").write_text("not an image")
    # the model file does not exist: the folders are checked first
    assert main(["score", str(tmp_path), "--model", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err == f"cprl-fast score: no image files ({', '.join(image_suffixes())}) in {tmp_path}\n"
    assert {".png", ".jpg", ".gif", ".ppm", ".tiff", ".webp"} <= set(image_suffixes())


def test_info_json_is_standard_json(capsys, tmp_path, tiny_run):
    from cprl_fast_cli import main

    state = torch.load(tiny_run / "best.pt", weights_only=True)
    state["audit"] = {"clean_srcc": float("nan"), "worst": {"1/255": {"srcc": float("inf")}}}
    torch.save(state, tmp_path / "best.pt")
    assert main(["info", str(tmp_path / "best.pt"), "--json"]) == 0

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    card = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert card["audit"]["clean_srcc"] is None and card["objective"] == "regression"
    # the machine it trained on: this one (the fixture trained in this process)
    from cprl_fast.installation import machine

    assert card["machine"] == {**machine(), "threads": card["machine"]["threads"]}


class _Failing(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise ImageTooLarge("/data/thin.png: image of 20000 x 1 px would have 1003520000 pixels")


def test_an_error_in_a_dataloader_worker_is_told_by_its_own_message():
    # torch re-raises it as "Caught ImageTooLarge in DataLoader worker process 0." and the
    # traceback: the first line, which the command line printed, named no file
    with pytest.raises(ImageTooLarge) as err:
        next(iter(torch.utils.data.DataLoader(_Failing(), num_workers=1)))
    assert str(err.value).startswith("Caught ImageTooLarge in DataLoader worker process 0.")
    assert error_line(err.value) == ("/data/thin.png: image of 20000 x 1 px would have "
                                     "1003520000 pixels")  # fmt: skip
    assert error_line(ValueError("first\rline\nsecond")) == "first\rline\\nsecond"
    long = "first line\n" + "x" * 2000 + "\nlast"
    assert error_line(RuntimeError(long)) == "first line (2 more lines: --debug shows them)"
    assert error_line(KeyError()) == "KeyError"


def test_info_escapes_control_characters_of_a_card(monkeypatch, capsys):
    # every string a card shows is checked against a registry today; the printer does not rely
    # on it (a terminal would run "\x1b[2J" and clear the screen)
    from cprl_fast_cli import main

    monkeypatch.setattr("cprl_fast.train.runs.model_card",
                        lambda path: {"dataset": "x\x1b[2J\ry", "split": {"a": "\x1b"}})
    assert main(["info", "best.pt"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "x\\x1b[2J\\ry" in out


@pytest.fixture(scope="module")
def run_without_val(tmp_path_factory):
    """A run folder of one step, trained with val_ratio 0 (as --recipe native trains)."""
    from data_fixtures import shared_builtin_root

    from cprl_fast.data import load_splits
    from cprl_fast.train import TrainConfig, Trainer

    root = shared_builtin_root(tmp_path_factory)
    out = tmp_path_factory.mktemp("no-val")
    sets = load_splits("builtin", root, ("train",), image_size=32, val_ratio=0.0)
    cfg = TrainConfig(model_options={"arch": "resnet18"}, image_size=32, batch_size=8,
                      max_steps=1, val_ratio=0.0, out_dir=str(out), root=str(root))  # fmt: skip
    Trainer(cfg, sets["train"]).fit()
    return out


@pytest.mark.slow  # a training step and the built-in data: 7-20 s
@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_a_split_without_images_is_named_not_a_torch_error(capsys, tmp_path, run_without_val,
                                                           command):  # fmt: skip
    """A run trained with val_ratio 0 (--recipe native) has no val side: `evaluate --split val`
    ended in "torch.cat(): expected a non-empty list of Tensors"."""
    from cprl_fast_cli import main

    assert main([command, "--checkpoint", str(run_without_val / "last.pt"), "--split", "val",
                 "--attack", "fgsm", "--out-dir", str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.endswith("--split val of builtin holds 0 image(s): SRCC needs at least 2 (a run "
                        "trained with val_ratio 0, as --recipe native, has no val side); choose "
                        "another --split")  # fmt: skip
