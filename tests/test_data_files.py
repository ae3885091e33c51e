"""Malformed score and split files, and concurrent first use of the built-in dataset: each is an
error naming the file and what is wrong (or a counted warning for rows that are skipped), never
a silent wrong split or score, and never a crash of another process."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_livec_official, make_livec_pyiqa, make_vcl

from cprl_fast.data import DatasetFormatError, load_dataset, load_items
from cprl_fast.io import read_json


def test_non_finite_and_out_of_scale_scores_are_refused(tmp_path):

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


def test_a_score_file_that_is_not_utf8(tmp_path):
    make_livec_pyiqa(tmp_path, extra=5)
    meta = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    meta.write_bytes(meta.read_bytes().replace(b"img_name", "img_nàme".encode("latin-1")))
    with pytest.raises(DatasetFormatError, match=rf"{meta.name} is not UTF-8 text .*0xe0"):
        load_items("livec", tmp_path)


def test_duplicate_rows(tmp_path, caplog):
    make_livec_pyiqa(tmp_path, extra=5)
    meta = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    rows = list(csv.reader(meta.open()))
    with meta.open("a", newline="") as fh:
        csv.writer(fh).writerow(rows[8])  # 200.bmp again, the same score: kept once, counted
    with caplog.at_level("WARNING", logger="cprl_fast.data"):
        items, _ = load_items("livec", tmp_path)
    assert len(items) == 5 and "1 duplicate row(s) with the same score kept once" in caplog.text
    with meta.open("a", newline="") as fh:
        csv.writer(fh).writerow([rows[8][0], "1.0", "10.0"])  # 200.bmp with another score
    with pytest.raises(DatasetFormatError, match=r"200\.bmp is listed twice with different scores"):
        load_items("livec", tmp_path)


def test_vcl_rows_that_name_no_distorted_image_are_counted(tmp_path, caplog):
    make_vcl(tmp_path)
    with open(tmp_path / "vcl_mos.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([["IMG_01.bmp", "99"], ["IMG_1_AWGN_1.bmp", "50"]])
    with caplog.at_level("WARNING", logger="cprl_fast.data"):
        items, _ = load_items("vcl", tmp_path)
    assert len(items) == 552
    assert "skipped 2 row(s) whose name is not IMG_XX_<TYPE>_<L> (first: 'IMG_01.bmp')" in (
        caplog.text
    )


@pytest.fixture
def vcl_split(tmp_path) -> tuple[Path, Path, dict]:
    make_vcl(tmp_path / "vcl")
    split = tmp_path / "split.json"
    load_dataset("vcl", tmp_path / "vcl", split="train", split_file=split, seed=1)
    return tmp_path / "vcl", split, json.loads(split.read_text())


def _edit(split: Path, record: dict, **changes) -> None:
    split.write_text(json.dumps({**record, **changes}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {"train_scenes": None}, "train_scenes must be a list of scene names, got None"),
        (lambda r: {"test_scenes": r["test_scenes"] + ["IMG_99"]},
         "names 1 scene(s) the dataset does not have (first: 'IMG_99')"),
        (lambda r: {"train_scenes": r["train_scenes"][1:]},
         "puts 1 scene(s) of the dataset on no side"),
        (lambda r: {"val_scenes": r["val_scenes"] + r["test_scenes"][:1]},
         "on both val and test"),
        (lambda r: {"counts": {**r["counts"], "test_images": 1}},
         "says test_images=1, but its scenes hold"),
        (lambda r: {"train_scenes": sorted(r["train_scenes"][1:] + r["test_scenes"][:1]),
                    "test_scenes": sorted(r["test_scenes"][1:] + r["train_scenes"][:1]),
                    "counts": {}},
         "its scenes are not those seed 1 gives"),
    ],
)  # fmt: skip
def test_a_split_file_is_checked_completely(vcl_split, change, message):
    root, split, record = vcl_split
    _edit(split, record, **change(record))
    pattern = re.escape(f"split file {split}") + ".*" + re.escape(message)
    with pytest.raises(ValueError, match=pattern):
        load_dataset("vcl", root, split="train", split_file=split)


def test_a_split_file_that_is_not_an_object(vcl_split):
    root, split, _ = vcl_split
    split.write_text("null")
    with pytest.raises(ValueError, match="must hold a JSON object, got NoneType"):
        load_dataset("vcl", root, split="train", split_file=split)


def _within(seconds: float, call):
    """``call()``'s exception (or None), from a daemon thread given ``seconds``: a read that
    blocks (a FIFO opened for reading waits for a writer) fails the test instead of hanging."""
    out: list = []

    def run():
        try:
            call()
            out.append(None)
        except Exception as err:  # handed to the test
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still reading after {seconds} s"
    return out[0]


def test_a_split_file_that_is_no_json_file_is_named_and_never_blocks(vcl_split, monkeypatch):
    root, split, record = vcl_split

    def load():
        load_dataset("vcl", root, split="train", split_file=split)

    split.write_text("[" * 100_000)  # json would raise RecursionError
    assert re.search(re.escape(f"split file {split} is not valid JSON (nested too deeply"),
                     str(_within(30, load)))  # fmt: skip
    _edit(split, record)
    monkeypatch.setattr("cprl_fast.io.MAX_JSON_BYTES", 100)
    too_big = str(_within(30, load))
    assert re.search(r"has \d+ bytes, more than the 100 such a file can hold", too_big)
    fifo = split.with_name("report.json")
    os.mkfifo(fifo)
    err = _within(30, lambda: read_json(fifo, "study report"))  # an open would wait for ever
    assert isinstance(err, ValueError) and f"study report {fifo} is not a regular file" in str(err)


def test_a_score_file_the_csv_module_cannot_read_is_named(tmp_path):
    make_livec_pyiqa(tmp_path, extra=5)
    meta = tmp_path / "meta_info_LIVEChallengeDataset.csv"
    good = meta.read_bytes()
    meta.write_bytes(good + b"x" * 200_000 + b",1,2\n")  # a field over csv's 128 kB limit
    with pytest.raises(DatasetFormatError, match=rf"{meta.name} is not a CSV table .*line 14: "
                                                 r"field larger than field limit"):  # fmt: skip
        load_items("livec", tmp_path)
    meta.write_bytes(good)
    os.mkfifo(tmp_path / "notes.csv")  # scanned for the score table's columns: never opened
    assert _within(30, lambda: load_items("livec", tmp_path)) is None


def test_a_matlab_score_file_that_expands_too_far_or_is_corrupt_is_named(tmp_path):
    from scipy.io import loadmat, savemat

    make_livec_official(tmp_path)
    mos = tmp_path / "ChallengeDB_release" / "ChallengeDB_release" / "Data" / "AllMOS_release.mat"
    values = loadmat(mos)["AllMOS_release"]
    savemat(mos, {"AllMOS_release": values}, do_compression=True)  # as MATLAB saves: compressed
    assert len(load_items("livec", tmp_path)[0]) == values.size - 7
    savemat(mos, {"AllMOS_release": np.zeros((1, 3_000_000))}, do_compression=True)
    assert mos.stat().st_size < 100_000  # 24 MB once inflated, which loadmat would do whole
    with pytest.raises(DatasetFormatError, match=rf"{mos.name} expands to more than 16777216"):
        load_items("livec", tmp_path)
    mos.write_bytes(mos.read_bytes()[:300])  # a cut zlib stream: zlib.error inside scipy
    with pytest.raises(DatasetFormatError, match=rf"{mos.name} is not a MATLAB file this library"):
        load_items("livec", tmp_path)


def test_a_hand_made_split_says_seed_null(vcl_split):
    root, split, record = vcl_split
    moved = record["test_scenes"][0]
    hand = {"train_scenes": sorted(record["train_scenes"] + [moved]),
            "test_scenes": record["test_scenes"][1:], "seed": None, "counts": {}}  # fmt: skip
    _edit(split, record, **hand)
    train = load_dataset("vcl", root, split="train", split_file=split)
    assert moved in {it.scene for it in train.items}


def test_an_old_split_file_without_validation_loads(vcl_split):
    root, split, record = vcl_split
    old = {k: v for k, v in record.items() if not k.startswith("val")}
    old["train_scenes"] = sorted(record["train_scenes"] + record["val_scenes"])
    old["counts"] = {}
    split.write_text(json.dumps(old))
    sets = {s: load_dataset("vcl", root, split=s, split_file=split) for s in ("train", "val")}
    assert len(sets["val"]) == 0 and len(sets["train"]) > 0


@pytest.mark.slow
def test_two_processes_generating_the_builtin_dataset_at_once(tmp_path):
    """torchrun ranks on a fresh machine: both must get the dataset, neither may remove the
    copy the other reads."""
    code = ("import sys; from cprl_fast.data import load_items; "
            "items, _ = load_items('builtin', sys.argv[1]); print(len(items))")  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].strip() for o in outs] == ["250", "250"]
    # generated once: the second process waited for the first and found it complete
    assert sum("generating the built-in dataset" in o[1] for o in outs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".builtin-v1.lock", "builtin-v1"]


def _koniq_table(root: Path, name: str) -> Path:
    (root / "1024x768").mkdir(parents=True)
    table = root / "koniq10k_scores_and_distributions.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD",
                    "MOS_zscore"])  # fmt: skip
        w.writerows([["1.jpg", 1, 1, 1, 1, 1, 5, "3.0", "1.0", "50"],
                     [name, 1, 1, 1, 1, 1, 5, "3.0", "1.0", "50"]])  # fmt: skip
    return table


def _live_table(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    table = root / "meta_info_LIVEIQADataset.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["ref_name", "dist_name", "mos"],
                                  ["refimgs/a.bmp", "jpeg/img1.bmp", "30"],
                                  ["refimgs/a.bmp", name, "40"]])  # fmt: skip
    return table


def _livec_table(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    table = root / "meta_info_LIVEChallengeDataset.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["img_name", "mos"], ["200.bmp", "30"], [name, "40"]])
    return table


def _synthetic_table(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    table = root / "scores.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["image", "scene", "distortion", "level", "ms_ssim", "score"],
                                  ["images/a_blur_1.png", "a", "blur", 1, "0.9", "0.8"],
                                  [name, "a", "blur", 2, "0.8", "0.7"]])  # fmt: skip
    return table


@pytest.mark.parametrize("dataset, table", [("koniq", _koniq_table), ("live", _live_table),
                                            ("livec", _livec_table),
                                            ("synthetic", _synthetic_table)])  # fmt: skip
@pytest.mark.parametrize("name", ["../outside.png", "/etc/hostname", "a/../../b.png", ""])
def test_a_score_table_never_names_a_file_outside_the_dataset(tmp_path, dataset, table, name):
    written = table(tmp_path / "data", name)
    with pytest.raises(DatasetFormatError, match=rf"{re.escape(str(written))}, row 3: image name "
                       rf"{re.escape(repr(name))} must be a path relative to the dataset's folder"):
        load_items(dataset, tmp_path / "data")


def test_a_synthetic_level_that_is_no_integer_is_named(tmp_path):
    written = _synthetic_table(tmp_path / "data", "images/a_blur_2.png")
    written.write_text(written.read_text().replace(",2,", ",2.5,"))
    with pytest.raises(DatasetFormatError, match=r"row 3: column 'level' is not a level .*'2\.5'"):
        load_items("synthetic", tmp_path / "data")
