"""Dataset loaders on fixtures in the owners' and pyiqa's formats, splits, and the built-in set."""

from __future__ import annotations

import csv
import filecmp
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import (
    copy_realmeta,
    koniq_names,
    koniq_placeholders,
    make_koniq_scores_file,
    make_live_official,
    make_live_pyiqa,
    make_livec_official,
    make_livec_pyiqa,
    make_vcl,
    shared_builtin_root,
    tiny_image,
)
from PIL import Image

from cprl_fast.data import DatasetFormatError, load_dataset, load_items, split_seeds
from cprl_fast.data.builtin import LEVELS, SCENES, generate


def _scenes(ds) -> set[str]:
    return {it.scene for it in ds.items}


def _assert_split_disjoint(name, root, **kw):
    train = load_dataset(name, root, split="train", seed=3, **kw)
    val = load_dataset(name, root, split="val", seed=3, **kw)
    test = load_dataset(name, root, split="test", seed=3, **kw)
    full = load_dataset(name, root, split="all", **kw)
    sides = [_scenes(train), _scenes(val), _scenes(test)]
    assert all(a.isdisjoint(b) for i, a in enumerate(sides) for b in sides[i + 1 :])
    assert len(train) + len(val) + len(test) == len(full)
    assert len(train) > len(test) > 0 and len(val) > 0
    return train, test, full


class TestLive:
    def test_official_realigned(self, tmp_path):
        made = make_live_official(tmp_path)
        items, score_file = load_items("live", tmp_path)
        assert score_file.name == "dmos_realigned.mat"
        assert len(items) == 779
        keep = np.flatnonzero(made["orgs"] == 0)
        d = made["dmos_new"][keep]
        want = 1 - (d - d.min()) / (d.max() - d.min())
        np.testing.assert_allclose([it.score for it in items], want)
        np.testing.assert_allclose([it.raw_score for it in items], d)
        scores = np.array([it.score for it in items])
        assert scores.min() == 0.0 and scores.max() == 1.0
        # orgs == 1 entries (reference copies) are excluded
        dropped = set(np.flatnonzero(made["orgs"] == 1))
        assert all(int(Path(it.path).stem[3:]) - 1 + _offset(it) not in dropped for it in items)
        assert {it.distortion for it in items} == {"jp2k", "jpeg", "wn", "gblur", "fastfading"}
        assert len(_scenes(load_dataset("live", tmp_path))) == 29

    def test_falls_back_to_dmos_mat(self, tmp_path):
        made = make_live_official(tmp_path)
        (tmp_path / "dmos_realigned.mat").unlink()
        items, score_file = load_items("live", tmp_path)
        assert score_file.name == "dmos.mat"
        keep = np.flatnonzero(made["orgs"] == 0)
        np.testing.assert_allclose([it.raw_score for it in items], made["dmos"][keep])

    def test_split_by_scene(self, tmp_path):
        make_live_official(tmp_path)
        _assert_split_disjoint("live", tmp_path)

    def test_pyiqa_layout(self, tmp_path):
        dmos = make_live_pyiqa(tmp_path)
        items, score_file = load_items("live", tmp_path)
        assert score_file.name == "meta_info_LIVEIQADataset.csv" and len(items) == len(dmos)
        np.testing.assert_allclose(
            [it.score for it in items],
            1 - (dmos - dmos.min()) / (dmos.max() - dmos.min()),
            atol=1e-6,
        )
        assert {it.scene for it in items} == {f"ref{i}" for i in range(8)}

    def test_missing_variable(self, tmp_path):
        make_live_official(tmp_path)
        from scipy.io import savemat

        savemat(tmp_path / "dmos_realigned.mat", {"orgs": np.zeros((1, 982))})
        with pytest.raises(DatasetFormatError, match="has no variable 'dmos_new'"):
            load_items("live", tmp_path)


def _offset(item) -> int:
    from cprl_fast.data.live import FOLDERS

    start = 0
    for folder, count in FOLDERS:
        if folder == item.distortion:
            return start
        start += count
    raise AssertionError(item)


class TestVcl:
    @pytest.mark.parametrize("header", [True, False])
    def test_official(self, tmp_path, header):
        scores = make_vcl(tmp_path, header=header)
        ds = load_dataset("vcl", tmp_path)
        assert len(ds) == 552 and len(_scenes(ds)) == 23
        for it in ds.items:
            key = Path(it.path).stem
            assert it.score == pytest.approx(scores[key] / 100, abs=1e-5)
            assert it.scene == key[:6] and it.distortion == key.split("_")[2]
            assert it.level == int(key[-1])
        _assert_split_disjoint("vcl", tmp_path)

    def test_missing_image(self, tmp_path):
        make_vcl(tmp_path)
        (tmp_path / "images" / "IMG_05_BLU_3.bmp").unlink()
        with pytest.raises(FileNotFoundError, match="IMG_05_BLU_3"):
            load_dataset("vcl", tmp_path)

    def test_wrong_score_column(self, tmp_path):
        make_vcl(tmp_path)
        path = tmp_path / "vcl_mos.csv"
        path.write_text(path.read_text().replace("image_name,MOS", "image_name,quality", 1))
        with pytest.raises(DatasetFormatError, match=r"vcl_mos.csv has no column 'mos'"):
            load_dataset("vcl", tmp_path)

    def test_a_fifo_or_folder_named_like_a_table_is_passed_over(self, tmp_path):
        import os

        scores = make_vcl(tmp_path)
        os.mkfifo(tmp_path / "a_first.csv")  # searched first: opened, it would wait for ever
        (tmp_path / "b.txt").mkdir()
        ds = load_dataset("vcl", tmp_path)
        assert len(ds) == len(scores) == 552

    def test_xls_only(self, tmp_path):
        (tmp_path / "results.xls").write_bytes(b"\xd0\xcf")
        with pytest.raises(FileNotFoundError, match="save it as CSV"):
            load_dataset("vcl", tmp_path)


class TestLiveChallenge:
    def test_official_nested_twice(self, tmp_path):
        names = make_livec_official(tmp_path)
        ds = load_dataset("livec", tmp_path)
        assert len(ds) == len(names) - 7
        assert not any(Path(it.path).stem in {f"t{i}" for i in range(1, 8)} for it in ds.items)
        assert all(
            0 <= it.score <= 1 and it.score == pytest.approx(it.raw_score / 100) for it in ds.items
        )
        assert len(_scenes(ds)) == len(ds)  # every image its own scene
        _assert_split_disjoint("livec", tmp_path)

    def test_pyiqa_layout(self, tmp_path):
        names = make_livec_pyiqa(tmp_path)
        items, score_file = load_items("livec", tmp_path)
        assert score_file.suffix == ".csv" and len(items) == len(names) - 7
        assert all(Path(it.path).is_file() for it in items)

    def test_official_preferred_over_pyiqa(self, tmp_path):
        make_livec_official(tmp_path)
        make_livec_pyiqa(tmp_path / "ChallengeDB_release" / "ChallengeDB_release")
        _, score_file = load_items("livec", tmp_path)
        assert score_file.name == "AllMOS_release.mat"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Placeholder JPEGs under KonIQ-10k's 10073 real image names (512x384/)."""
    root = tmp_path_factory.mktemp("koniq")
    koniq_placeholders(root, koniq_names(), "512x384")
    return root


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory):
    root = shared_builtin_root(tmp_path_factory)  # read only here: one generation per session
    generate(root)
    return root


class TestKoniq:
    def test_pyiqa_real_metadata(self, images, tmp_path):
        root = tmp_path / "k"
        root.mkdir()
        (root / "512x384").symlink_to(images / "512x384")
        meta = copy_realmeta(root, "pyiqa_meta_info_KonIQ10kDataset.csv")
        items, score_file = load_items("koniq", root)
        assert score_file == meta and len(items) == 10073
        with open(meta, newline="") as fh:
            first = next(csv.DictReader(fh))
        c = [float(first[f"c{i}"]) for i in range(1, 6)]
        mos = sum((i + 1) * ci for i, ci in enumerate(c)) / sum(c)
        assert items[0].raw_score == pytest.approx(mos)
        assert items[0].score == pytest.approx((mos - 1) / 4)
        assert all(0 <= it.score <= 1 for it in items)

    def test_official_split_file_and_sets(self, images, tmp_path):
        root = tmp_path / "k"
        root.mkdir()
        (root / "512x384").symlink_to(images / "512x384")
        copy_realmeta(root, "koniq10k_distributions_sets.csv")
        counts = {
            s: len(load_dataset("koniq", root, split=s, official_split=True))
            for s in ("train", "val", "test")
        }
        assert counts == {"train": 7058, "val": 1000, "test": 2015}
        items, _ = load_items("koniq", root)
        # this file's MOS column is the 0-100 z-score: the 1-5 MOS comes from the votes
        assert all(1 <= it.raw_score <= 5 for it in items)

    def test_official_scores_file_in_its_own_folder(self, images, tmp_path):
        root = tmp_path / "k"
        (root / "meta").mkdir(parents=True)
        (root / "512x384").symlink_to(images / "512x384")
        mos = make_koniq_scores_file(root / "meta")
        items, score_file = load_items("koniq", root)
        assert score_file.name == "koniq10k_scores_and_distributions.csv"
        got = {Path(it.path).name: it for it in items}
        name = next(iter(mos))
        assert got[name].raw_score == pytest.approx(mos[name], abs=1e-6)
        assert got[name].score == pytest.approx((mos[name] - 1) / 4, abs=1e-6)

    def test_resolution_choice(self, images, tmp_path):
        root = tmp_path / "k"
        root.mkdir()
        (root / "512x384").symlink_to(images / "512x384")
        copy_realmeta(root, "koniq10k_distributions_sets.csv")
        with pytest.raises(FileNotFoundError, match="1024x768"):
            load_items("koniq", root, resolution="1024x768")
        items, _ = load_items("koniq", root, resolution="512x384")
        assert "512x384" in items[0].path


class TestBadInput:
    def test_missing_root(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="dataset root of 'live' not found"):
            load_dataset("live", tmp_path / "nope")

    @pytest.mark.parametrize("name", ["live", "livec", "koniq", "vcl"])
    def test_missing_score_file(self, tmp_path, name):
        with pytest.raises(FileNotFoundError, match="score"):
            load_dataset(name, tmp_path)

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="did you mean 'livec'"):
            load_dataset("livc", "/tmp")

    def test_wrong_column(self, tmp_path):
        with open(tmp_path / "meta.csv", "w") as fh:
            fh.write("img_name,quality,std\nt1.bmp,3,1\n")
        (tmp_path / "ChallengeDB_release").mkdir()
        with pytest.raises(FileNotFoundError, match="img_name,mos"):
            load_dataset("livec", tmp_path)

    def test_non_numeric_score_names_row_and_column(self, tmp_path):
        names = make_livec_pyiqa(tmp_path, extra=3)
        path = tmp_path / "meta_info_LIVEChallengeDataset.csv"
        text = path.read_text().splitlines()
        text[9] = f"{names[8]},high,1"
        path.write_text("\n".join(text) + "\n")
        with pytest.raises(DatasetFormatError, match=r"row 10: column 'mos' is not a number"):
            load_dataset("livec", tmp_path)

    def test_missing_image_and_skip(self, tmp_path):
        names = make_livec_pyiqa(tmp_path, extra=10)
        (tmp_path / "Images" / names[9]).unlink()
        with pytest.raises(FileNotFoundError, match=names[9]):
            load_dataset("livec", tmp_path)
        ds = load_dataset("livec", tmp_path, skip_unreadable=True)
        assert ds.skipped == 1 and len(ds) == 9

    def test_corrupt_image(self, tmp_path):
        names = make_livec_pyiqa(tmp_path, extra=10)
        bad = tmp_path / "Images" / names[8]
        bad.write_bytes(b"not an image")
        ds = load_dataset("livec", tmp_path)
        index = next(i for i, it in enumerate(ds.items) if Path(it.path) == bad)
        with pytest.raises(OSError, match=f"cannot decode image .*{names[8]}"):
            ds[index]
        assert load_dataset("livec", tmp_path, skip_unreadable=True).skipped == 1

    def test_skip_drops_an_image_too_thin_for_the_default_transform(self, tmp_path):
        names = make_livec_pyiqa(tmp_path, extra=10)
        thin = tmp_path / "Images" / names[7]
        Image.new("RGB", (20_000, 1)).save(thin)  # 20000 x 1 px: 20 MP once resized to 1000
        ds = load_dataset("livec", tmp_path, image_size=1000, skip_unreadable=True)
        assert ds.skipped == 1 and str(thin) not in {it.path for it in ds.items}
        ds = load_dataset("livec", tmp_path, image_size=32, skip_unreadable=True)
        assert ds.skipped == 0  # 640 000 pixels at 32 px: within the limit, kept
        ds = load_dataset("livec", tmp_path, image_size=1000, skip_unreadable=True,
                          transform=lambda img: img)  # its own transform: the size is not ours
        assert ds.skipped == 0

    def test_bad_split_name(self, tmp_path):
        with pytest.raises(ValueError, match="split must be one of"):
            load_dataset("builtin", tmp_path, split="training")


class TestSplitFiles:
    def test_ten_seeds_give_ten_splits(self, tmp_path):
        make_vcl(tmp_path)
        splits = {
            tuple(sorted(_scenes(load_dataset("vcl", tmp_path, split="test", seed=s))))
            for s in split_seeds(10)
        }
        assert split_seeds(10) == list(range(10)) and len(splits) >= 8

    def test_written_and_reused(self, tmp_path):
        make_vcl(tmp_path / "vcl")
        split = tmp_path / "split.json"
        a = load_dataset("vcl", tmp_path / "vcl", split="train", split_file=split, seed=1)
        record = json.loads(split.read_text())
        assert record["dataset"] == "vcl" and record["seed"] == 1
        assert record["counts"]["train_images"] == len(a)
        assert len(record["score_sha256"]) == 64
        b = load_dataset("vcl", tmp_path / "vcl", split="train", split_file=split, seed=99)
        assert [it.path for it in a.items] == [it.path for it in b.items]
        c = load_dataset("vcl", tmp_path / "vcl", split="train", seed=99)
        assert _scenes(c) != _scenes(a)

    def test_other_score_file_refused(self, tmp_path):
        make_vcl(tmp_path / "vcl")
        split = tmp_path / "split.json"
        load_dataset("vcl", tmp_path / "vcl", split="train", split_file=split)
        with open(tmp_path / "vcl" / "vcl_mos.csv", "a") as fh:
            fh.write("\n")  # the same scores, another file
        with pytest.raises(ValueError, match="different score file"):
            load_dataset("vcl", tmp_path / "vcl", split="train", split_file=split)

    def test_other_dataset_refused(self, tmp_path):
        split = tmp_path / "split.json"
        make_vcl(tmp_path / "vcl")
        load_dataset("vcl", tmp_path / "vcl", split_file=split)
        make_livec_pyiqa(tmp_path / "livec")
        with pytest.raises(ValueError, match="is for dataset 'vcl'"):
            load_dataset("livec", tmp_path / "livec", split_file=split)


class TestBuiltin:
    @pytest.fixture
    def root(self, builtin_root):
        return builtin_root

    @pytest.mark.slow
    def test_byte_identical_when_generated_twice(self, root, tmp_path):
        again = generate(tmp_path)
        first = root / "builtin-v1"
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert len(files) == 250 + 10 + 2
        assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
        _, mismatch, errors = filecmp.cmpfiles(first, again, [str(f) for f in files], shallow=False)
        assert mismatch == [] and errors == []

    def test_scores_fall_with_level(self, root):
        items, _ = load_items("builtin", root)
        assert len(items) == 250
        for scene in SCENES:
            for kind in LEVELS:
                s = [it.score for it in sorted(items, key=lambda i: i.level or 0)
                     if it.scene == scene and it.distortion == kind]  # fmt: skip
                assert len(s) == 5, (scene, kind)
                assert all(a > b for a, b in itertools.pairwise(s)), (scene, kind, s)
        scores = [it.score for it in items]
        assert min(scores) == 0.0 and max(scores) == 1.0

    def test_dataset_and_split(self, root):
        train, _, _ = _assert_split_disjoint("builtin", root)
        x, y = train[0]
        assert x.shape == (3, 320, 320) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1 and 0 <= float(y) <= 1
        small = load_dataset("builtin", root, split="test", image_size=64)
        assert small[0][0].shape == (3, 64, 64)
        assert small.meta(0)["distortion"] in LEVELS

    def test_dataloader_workers_and_distributed_sampler(self, root):
        ds = load_dataset("builtin", root, split="train", image_size=32)
        loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
        xs, ys = next(iter(loader))
        assert xs.shape == (16, 3, 32, 32) and ys.shape == (16,)
        seen = []
        for rank in range(2):
            sampler = torch.utils.data.DistributedSampler(
                ds, num_replicas=2, rank=rank, shuffle=False
            )
            seen += list(sampler)
        assert sorted(seen) == list(range(len(ds)))

    @pytest.mark.slow
    def test_incomplete_generation_is_redone(self, tmp_path):
        (tmp_path / "builtin-v1" / "images").mkdir(parents=True)  # no scores.csv: incomplete
        tiny_image(tmp_path / "builtin-v1" / "images" / "junk.png")
        folder = generate(tmp_path)
        assert not (folder / "images" / "junk.png").exists() and (folder / "scores.csv").is_file()


class TestFolds:
    def test_every_image_is_a_test_image_exactly_once(self, tmp_path):
        make_vcl(tmp_path)
        tested: list[str] = []
        for k in range(5):
            sides = {s: load_dataset("vcl", tmp_path, split=s, folds=5, fold=k, seed=2)
                     for s in ("train", "val", "test", "all")}  # fmt: skip
            scenes = [_scenes(sides[s]) for s in ("train", "val", "test")]
            assert all(a.isdisjoint(b) for i, a in enumerate(scenes) for b in scenes[i + 1 :])
            assert sum(len(sides[s]) for s in ("train", "val", "test")) == len(sides["all"])
            assert len(sides["val"]) > 0 and 4 <= len(scenes[2]) <= 5  # 23 scenes in 5 folds
            tested += [it.path for it in sides["test"].items]
        assert sorted(tested) == sorted(it.path for it in sides["all"].items)

    def test_a_split_file_is_one_fold(self, tmp_path):
        make_vcl(tmp_path / "vcl")
        split = tmp_path / "fold1.json"
        a = load_dataset("vcl", tmp_path / "vcl", split="test", folds=4, fold=1, split_file=split)
        record = json.loads(split.read_text())
        assert (record["folds"], record["fold"]) == (4, 1)
        b = load_dataset("vcl", tmp_path / "vcl", split="test", folds=4, fold=1, split_file=split)
        assert [it.path for it in a.items] == [it.path for it in b.items]
        with pytest.raises(ValueError, match="holds fold 1 of 4, not fold 2 of 4"):
            load_dataset("vcl", tmp_path / "vcl", split="test", folds=4, fold=2, split_file=split)

    def test_bad_folds(self, tmp_path):
        make_vcl(tmp_path)
        with pytest.raises(ValueError, match="fold must be an int in \\[0, 3\\), got 3"):
            load_dataset("vcl", tmp_path, split="test", folds=3, fold=3)
        with pytest.raises(ValueError, match="folds must be at most the 23 scenes"):
            load_dataset("vcl", tmp_path, split="test", folds=40)
        # a fold without folds (cprl-fast pretrain --dataset ... --fold 2) is refused, not ignored
        with pytest.raises(ValueError, match="fold=2 needs folds"):
            load_dataset("vcl", tmp_path, split="test", fold=2)
        with pytest.raises(ValueError, match=r"split_seed must be an integer from 0 to 2\*\*63"):
            load_dataset("vcl", tmp_path, split="test", seed=-1)


@pytest.mark.slow
def test_builtin_v2(tmp_path_factory):
    """750 images: 15 scenes x 10 distortion types x 5 levels; pseudo-MOS in [0, 1] that
    falls from level 1 to level 5 for (nearly) every scene and type. Saturation does not
    change a greyscale photograph, whose scores stay at the reference's."""
    from cprl_fast.data.builtin import LEVELS_V2, SCENES_V2

    # generated once for the session (test_study_gpu reads it there too)
    root = shared_builtin_root(tmp_path_factory)
    items, score_file = load_items("builtin-v2", root)
    assert len(items) == 750 and score_file.parent.name == "builtin-v2"
    assert {it.scene for it in items} == set(SCENES_V2) and len(LEVELS_V2) == 10
    assert {it.distortion for it in items} == set(LEVELS_V2)
    assert all(0.0 <= it.score <= 1.0 for it in items)
    falls = []
    for scene in SCENES_V2:
        for kind in LEVELS_V2:
            s = {it.level: it.score for it in items if it.scene == scene and it.distortion == kind}
            if s[1] - s[5] > 1e-6:  # the type changes this photograph
                falls.append(s[5] < s[1])
    assert len(falls) >= 140 and all(falls)
    assert load_dataset("builtin", root, split="all").name == "builtin"  # v1 still loads
