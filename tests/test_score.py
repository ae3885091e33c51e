"""Using a trained model: scoring paths, folders, PIL images, arrays and tensors with the run's
preprocessing; the metric as a differentiable loss; `cprl-fast score` and `cprl-fast info`;
best.pt holding the model and its card only."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cprl_fast

SIZE = 32


@pytest.fixture
def run(tiny_run):
    """The session's tiny run (tests/conftest.py): a ResNet-18 trained two steps at 32 px."""
    return tiny_run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four images of the run's size (no resize: every input path gives the same pixels), as
    uint8 arrays and as PNG files in a folder tree, plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(4)]
    (folder / "sub").mkdir()
    for k, a in enumerate(arrays):
        Image.fromarray(a).save(folder / ("sub" if k % 2 else ".") / f"img{k}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder, arrays


@pytest.mark.slow
def test_best_pt_holds_the_model_and_its_card_only(run):
    best = torch.load(run / "best.pt", weights_only=True)
    last = torch.load(run / "last.pt", weights_only=True)
    assert "optimizers" not in best and "rng" not in best and "optimizers" in last
    assert best["versions"]["torch"] == torch.__version__ and best["config"] == last["config"]
    assert (run / "best.pt").stat().st_size < 0.6 * (run / "last.pt").stat().st_size


def test_every_kind_of_input_gives_the_same_score(run, images):
    folder, arrays = images
    metric = cprl_fast.create_metric(run / "best.pt", batch_size=3)
    assert metric.lower_better is False and metric.score_range == (0.0, 1.0)
    tensors = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])
    want = metric(tensors).detach()
    assert want.shape == (4,) and ((want >= 0) & (want <= 1)).all()
    for inputs in (arrays, [Image.fromarray(a) for a in arrays], tensors, list(tensors)):
        done, failed = metric.score(inputs)
        assert failed == [] and len(done) == 4
        torch.testing.assert_close(torch.tensor([s for _, s in done]), want)
    done, failed = metric.score(folder)
    names = [n for n, _ in done]
    assert names == sorted(names) and len(done) == 4  # recursive, sorted
    assert [f.path for f in failed] == [str(folder / "broken.png")]
    by_name = dict(done)
    for k in range(4):
        path = folder / ("sub" if k % 2 else ".") / f"img{k}.png"  # pathlib drops the "."
        assert by_name[str(path)] == pytest.approx(float(want[k]), abs=1e-5)


def test_called_as_pyiqa_calls_its_metrics_it_returns_a_tensor(run, images):
    folder, arrays = images
    metric = cprl_fast.create_metric(run / "best.pt")
    done, _ = metric.score(folder)
    want = torch.tensor([s for _, s in done])
    first = folder / "img0.png"
    for x in (first, str(first), [first], Image.open(first), arrays[0]):
        got = metric(x)
        assert isinstance(got, torch.Tensor) and got.shape == (1,)
        torch.testing.assert_close(got, want[:1], rtol=0, atol=1e-5)
    subtree = metric(folder / "sub")
    assert subtree.shape == (2,)
    with pytest.raises(cprl_fast.score.ScoringError, match=r"cannot score .*broken\.png"):
        metric(folder)  # one unreadable file: an error naming it (score() lists it instead)


def test_as_loss_lets_gradients_reach_the_images(run):
    metric = cprl_fast.load_model(run / "best.pt", as_loss=True)
    x = torch.rand(2, 3, 40, 48, requires_grad=True)  # resized and cropped differentiably
    (1 - metric(x)).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.parameters())
    with torch.no_grad():
        assert not metric(x).requires_grad


def test_a_folder_entry_that_is_not_an_image_file_is_a_failure_row(run, tmp_path):
    import os

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")  # opening it would block: never opened
    (tmp_path / "c.png").symlink_to(tmp_path / "gone.png")  # a broken link
    (tmp_path / "d.png").symlink_to("/dev/zero")  # a device: never ends
    (tmp_path / "notes.txt").write_text("not an image's suffix: not listed")
    metric = cprl_fast.load_model(run / "best.pt")
    done, failed = metric.score(tmp_path)
    assert [name for name, _ in done] == [str(tmp_path / "a.png")]
    errors = {f.path: f.error for f in failed}
    assert list(errors) == [str(tmp_path / n) for n in ("b.png", "c.png", "d.png")]
    assert "not a regular file" in errors[str(tmp_path / "b.png")]
    assert "missing" in errors[str(tmp_path / "c.png")]
    assert "not a regular file" in errors[str(tmp_path / "d.png")]
    # the same files named one by one (as the CLI passes a folder's files on) give the same rows
    files = [tmp_path / n for n in ("a.png", "b.png", "c.png", "d.png")]
    assert metric.score(files) == (done, failed)


def test_a_named_link_that_resolves_nowhere_is_named_as_one(tmp_path):
    from cprl_fast.score import image_files

    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothing.png")
    for name in ("loop.png", "gone.png"):
        with pytest.raises(FileNotFoundError, match=rf"{name} \(a symbolic link that points "):
            image_files([tmp_path / name])
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: \S*none\.png$"):
        image_files([tmp_path / "none.png"])


def test_a_folder_gives_its_files_of_every_format_read(run, tmp_path):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    names = ["a.gif", "b.PPM", "c.pgm", "d.jpeg", "e.JPG", "f.tif", "g.webp", "h.bmp", "i.png"]
    for name in names:
        (image.convert("L") if name.endswith("pgm") else image).save(tmp_path / name)
    (tmp_path / "j.txt").write_text("not an image's suffix")
    done, failed = cprl_fast.load_model(run / "best.pt").score(tmp_path)
    assert [n for n, _ in done] == [str(tmp_path / n) for n in names] and not failed


def test_decoding_threads_give_the_same_rows_in_the_same_order(run, images, tmp_path):
    folder, arrays = images
    rng = np.random.default_rng(1)
    for k in range(11):  # more inputs than 2 x workers ahead, failures among them
        a = rng.integers(0, 256, (SIZE + k, SIZE + 2 * k, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / f"{k:02d}.png")
        if k % 4 == 1:
            (tmp_path / f"{k:02d}b.png").write_bytes(b"not a png")
    inputs = [tmp_path, folder, *arrays, torch.full((3, 8, 8), 2.0)]
    one = cprl_fast.load_model(run / "best.pt", batch_size=3, workers=1).score(inputs)
    assert len(one[0]) == 19 and len(one[1]) == 5
    for workers in (2, 5):
        metric = cprl_fast.load_model(run / "best.pt", batch_size=3, workers=workers)
        assert metric.workers == workers and metric.score(inputs) == one
    assert cprl_fast.score.default_workers() in range(1, 5)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"workers must be an integer >= 1, got {bad!r}"):
            cprl_fast.load_model(run / "best.pt", workers=bad)


def test_bad_inputs(run):
    metric = cprl_fast.load_model(run / "best.pt")
    with pytest.raises(TypeError, match="input 0: expected a path, PIL image"):
        metric.score([3.5])
    done, failed = metric.score([torch.full((3, 8, 8), 2.0)])
    assert done == [] and "must be in [0, 1]" in failed[0].error
    with pytest.raises(FileNotFoundError, match="no pretrained weights are distributed"):
        cprl_fast.load_model(run / "nope.pt")


def test_the_progress_bar_has_the_inputs_total_unless_they_come_as_an_iterator(run, capsys):
    metric = cprl_fast.load_model(run / "best.pt")
    done, _ = metric.score([torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8)], progress=True)
    assert len(done) == 3 and "3/3 [" in capsys.readouterr().err
    done, _ = metric.score(iter([torch.rand(3, 8, 8)]), progress=True)  # not listed first
    err = capsys.readouterr().err
    assert len(done) == 1 and "1img [" in err and "/1 [" not in err


def test_a_csv_score_reads_back_as_the_score_without_ties():
    from cprl_fast_cli.score import score_cell

    rng = np.random.default_rng(0)
    scores = torch.sigmoid(torch.from_numpy(rng.normal(0.3, 0.6, 10_000))).float().tolist()
    cells = [score_cell(s) for s in scores]
    assert [float(np.float32(c)) for c in cells] == scores
    assert len(set(cells)) == len(set(scores)) > len({f"{s:.6f}" for s in scores})
    assert [score_cell(s) for s in (0.0, 1.0, 0.5, 0.1)] == ["0.0", "1.0", "0.5", "0.1"]
    assert "e" not in score_cell(float(np.float32(1.2e-7)))  # positional, for spreadsheets


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cprl_fast_cli", *args], capture_output=True,
                          text=True)  # fmt: skip


@pytest.mark.slow
def test_cli_score_and_info(run, images, tmp_path):
    folder, _ = images
    r = _cli("score", str(folder), "--model", str(run / "best.pt"))
    assert r.returncode == 1  # one file could not be read
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 5 and sum(r_["error"] != "" for r_ in rows) == 1
    assert "scored 4 image(s); 1 could not be scored" in r.stderr and "broken.png" in r.stderr
    out = tmp_path / "scores.json"
    r = _cli("score", str(folder / "sub"), "--model", str(run / "best.pt"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["lower_better"] is False and len(data["scores"]) == 2
    bad = _cli("score", str(folder / "missing"), "--model", str(run / "best.pt"))
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr
    info = _cli("info", str(run / "best.pt"), "--json")
    card = json.loads(info.stdout)
    assert card["model"] == "resnet" and card["image_size"] == SIZE and card["val_ratio"] == 0.2
    assert card["split"]["score_sha256"] and card["versions"]["torch"] == torch.__version__
