"""cprl_fast.data.synthetic and .distortions: a quality dataset from any photographs, the same
bytes with any number of workers, loadable as ``synthetic``; every distortion type at every
level; the built-in sets made by the same writer; bad input named."""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cprl_fast.data import load_items, synthesize
from cprl_fast.data.distortions import (
    DISTORTIONS,
    INTEGER_KINDS,
    distort,
    distort_by,
    ms_ssim,
    square,
)
from cprl_fast.data.synthetic import MIN_SIZE, reference_files

KINDS = ["blur", "noise", "impulse"]


def _photo(seed: int, w: int = 240, h: int = 200) -> Image.Image:
    """A smooth image with edges (a gradient and two rectangles) and a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    arr = np.stack([x, y, 1 - x * y], -1) * 180 + rng.normal(0, 6, (h, w, 3))
    arr[40:120, 30 + 20 * seed : 90 + 20 * seed] = (230, 40, 40)
    arr[130:180, 120:200] = (20, 60, 200)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refs")
    _photo(0).save(d / "beach.png")
    (d / "sub").mkdir()
    _photo(1).convert("RGBA").save(d / "sub" / "city.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def made(refs, tmp_path_factory) -> Path:
    return synthesize(refs, tmp_path_factory.mktemp("made") / "ds", KINDS, size=MIN_SIZE,
                      progress=False)  # fmt: skip


def test_a_dataset_from_a_folder_of_photographs_loads_as_synthetic(made):
    items, score_file = load_items("synthetic", made)
    assert score_file == made / "scores.csv" and len(items) == 2 * len(KINDS) * 5
    assert {i.scene for i in items} == {"beach", "city"}
    assert {i.distortion for i in items} == set(KINDS)
    assert {i.level for i in items} == {1, 2, 3, 4, 5}
    scores = np.array([i.score for i in items])
    assert scores.min() == 0 and scores.max() == 1
    assert sorted(p.name for p in (made / "refs").iterdir()) == ["beach.png", "city.png"]
    with Image.open(made / "images" / "city_blur_3.png") as img:
        assert img.size == (MIN_SIZE, MIN_SIZE) and img.mode == "RGB"
    for scene in ("beach", "city"):  # within a scene and type, a higher level scores lower
        for kind in KINDS:
            got = [i.score for i in sorted(items, key=lambda i: i.level)
                   if i.scene == scene and i.distortion == kind]  # fmt: skip
            assert got[0] > got[-1], (scene, kind, got)


def test_writing_in_process_leaves_the_callers_threads(refs, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the caller's choice (cprl-fast's --threads), kept
        synthesize(refs, tmp_path / "ds", ["blur"], size=MIN_SIZE, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_one_thread_writes_the_same_bytes_as_several(refs, made, tmp_path, monkeypatch):
    from cprl_fast.data import synthetic

    monkeypatch.setattr(synthetic, "MAX_THREADS", 1)
    alone = synthesize(refs, tmp_path / "ds", KINDS, size=MIN_SIZE, progress=False)
    assert _digest(alone) == _digest(made)


def test_a_failing_image_stops_the_writing_and_leaves_no_folder(refs, tmp_path, monkeypatch):
    import torch

    from cprl_fast.data import synthetic

    def fail_on_city(img, kind, level, seed):
        if img.size == (MIN_SIZE, MIN_SIZE) and kind == "noise" and level == 4:
            raise OSError("disk full")
        return distort(img, kind, level, seed)

    monkeypatch.setattr(synthetic, "distort", fail_on_city)
    threads = torch.get_num_threads()
    with pytest.raises(OSError, match="disk full"):
        synthesize(refs, tmp_path / "ds", KINDS, size=MIN_SIZE, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder
    assert torch.get_num_threads() == threads
    assert synthetic._reference.cache_info().currsize == 0  # no reference kept decoded


@pytest.mark.slow
def test_two_workers_write_the_same_bytes(refs, made, tmp_path):
    again = synthesize(refs, tmp_path / "ds", KINDS, size=MIN_SIZE, workers=2, progress=False)
    assert _digest(again) == _digest(made)


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_every_distortion_changes_the_image_more_at_higher_levels(kind):
    ref = square(_photo(2), MIN_SIZE)
    mild, strong = (distort(ref, kind, level, seed=7) for level in (1, 5))
    assert mild.size == ref.size and mild.mode == "RGB"
    assert ms_ssim(strong, ref) < ms_ssim(mild, ref) < 1.0
    twice = [np.asarray(distort(ref, kind, 3, seed=7)) for _ in range(2)]
    assert np.array_equal(*twice)


def test_distorting_in_threads_leaves_the_warning_filters_as_they_were():
    # the colour distortions silence skimage's clipping warning with warnings.catch_warnings,
    # which is not thread-safe: overlapping in synthesize's threads, they left "ignore
    # UserWarning" installed in the process for good
    ref = square(_photo(1), MIN_SIZE)
    before = list(warnings.filters)

    def run(seed: int) -> None:
        for k in range(15):
            distort(ref, "oversaturate", 5, seed=seed * 100 + k)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(4)))
    assert warnings.filters == before


@pytest.mark.parametrize("kind", ["blur", "noise", "jpeg", "motion"])
def test_a_parameter_between_two_levels_distorts_between_them(kind):
    ref = square(_photo(2), MIN_SIZE)
    p2, p3 = DISTORTIONS[kind][1:3]
    assert np.array_equal(np.asarray(distort_by(ref, kind, p3, seed=7)),
                          np.asarray(distort(ref, kind, 3, seed=7)))  # fmt: skip
    between = (p2 + p3) / 2 if kind not in INTEGER_KINDS else (p2 + p3 + 1) // 2
    m2, mid, m3 = (ms_ssim(distort_by(ref, kind, p, seed=7), ref) for p in (p2, between, p3))
    assert m3 < mid < m2
    with pytest.raises(ValueError, match="at least 2 grey levels"):
        distort_by(ref, "quantise", 1.2, seed=0)


@pytest.mark.parametrize("length", DISTORTIONS["motion"])
def test_motion_blur_is_the_mean_of_the_pixels_centred_on_each_edges_repeated(length):
    # the definition, written out: each row padded by its edge pixels and convolved with a box
    ref = _photo(3, w=57, h=31)
    arr = np.asarray(ref, dtype=np.float64) / 255
    box = np.ones(length) / length
    want = np.apply_along_axis(lambda r: np.convolve(np.pad(r, length // 2, mode="edge"), box,
                                                     mode="valid"), 1, arr)  # fmt: skip
    want = np.round(np.clip(want, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(distort_by(ref, "motion", length, seed=0)), want)


def test_jpeg2000_without_openjpeg_is_named(monkeypatch):
    import PIL.features

    monkeypatch.setattr(PIL.features, "check", lambda name: name != "jpg_2000")
    with pytest.raises(RuntimeError, match="'jpeg2000' needs Pillow with JPEG 2000 support"):
        distort(square(_photo(2), MIN_SIZE), "jpeg2000", 1, seed=0)


def test_bad_input_is_named(refs, made, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        synthesize(refs, made, KINDS)
    with pytest.raises(ValueError, match=r"distortions must name types of .*got lens"):
        synthesize(refs, tmp_path / "a", ["blur", "lens"])
    with pytest.raises(ValueError, match="distortions must each be named once, got 'blur' 2"):
        synthesize(refs, tmp_path / "a", ["blur", "noise", "blur"])
    with pytest.raises(ValueError, match="size must be an integer side in pixels, 161"):
        synthesize(refs, tmp_path / "b", KINDS, size=64)
    with pytest.raises(FileNotFoundError, match="no reference images"):
        synthesize(tmp_path, tmp_path / "c", KINDS)
    (tmp_path / "x").mkdir()
    _photo(0).save(tmp_path / "x" / "beach.jpg")
    with pytest.raises(ValueError, match="two references make scene 'beach'"):
        reference_files([refs, tmp_path / "x"])
    with pytest.raises(ValueError, match=r"level must be 1\.\.5, got 0"):
        distort(_photo(0), "blur", 0, 0)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no leftovers


def test_references_that_would_mislabel_or_leak_are_refused_before_any_work(tmp_path):
    """An enlarged reference (not pristine), one photograph under two names (it could sit on
    both sides of a scene-disjoint split) and two scenes whose images share a file name (one
    image with two scores) are each named before any image is distorted; nothing is left,
    not even the folders made for the output."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(0).save(photos / "beach.png")
    _photo(1).resize((480, 400), Image.BICUBIC).save(photos / "city.jpg", quality=75)
    _photo(1).save(photos / "city_again.png")  # city, saved at half the size and losslessly
    with pytest.raises(ValueError, match=r"references 'city' and 'city_again' are one "
                       r"photograph \(PSNR [0-9.]+ dB >= 30 once resized\)"):  # fmt: skip
        synthesize(photos, tmp_path / "a", ["blur"], size=MIN_SIZE, progress=False)
    (photos / "city_again.png").unlink()
    with pytest.raises(ValueError, match=r"beach\.png is 240 x 200 px, smaller than size 256 on "
                       r"its shorter side .*: use a size of at most 200 or leave it out"):
        synthesize(photos, tmp_path / "new" / "deeper" / "b", ["blur"], size=256,
                   progress=False)  # fmt: skip
    _photo(2).save(photos / "city_lens.png")  # city_lens + blur = city + lens_blur
    with pytest.raises(ValueError, match=r"scenes 'city' \(lens_blur\) and 'city_lens' \(blur\) "
                       r"would both write images/city_lens_blur_<level>\.png"):
        synthesize(photos, tmp_path / "c", ["blur", "lens_blur"], size=MIN_SIZE, progress=False)
    _photo(3).save(photos / "Beach.png")  # one file with beach.png where case is ignored
    with pytest.raises(ValueError, match="two references make scene 'beach'"):
        synthesize(photos, tmp_path / "d", ["blur"], size=MIN_SIZE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
    (photos / "Beach.png").unlink()
    made = synthesize(photos, tmp_path / "e", ["blur"], size=MIN_SIZE, progress=False)
    assert {i.scene for i in load_items("synthetic", made)[0]} == {"beach", "city", "city_lens"}


def test_references_are_saved_as_they_come_and_read_back_from_the_dataset(tmp_path):
    """write_dataset takes references one at a time and saves each before the next is made,
    so a dataset of many photographs never holds them all in memory; the images are
    distorted from the saved files (the same bytes as from the images in memory)."""
    from cprl_fast.data.synthetic import write_dataset

    photos = {f"p{k}": square(_photo(k), MIN_SIZE) for k in range(3)}
    out = tmp_path / "streamed"

    def one_at_a_time():
        for k, (scene, img) in enumerate(photos.items()):
            if k:  # the one before was written when this one is asked for
                (work,) = [d for d in tmp_path.iterdir() if d.name.startswith(".streamed.")]
                assert (work / "refs" / f"p{k - 1}.png").is_file()
            yield scene, img

    levels = {k: DISTORTIONS[k] for k in KINDS}
    write_dataset(one_at_a_time(), out, levels, progress=False, distinct=True)
    write_dataset(photos, tmp_path / "mapping", levels, progress=False)
    assert _digest(out) == _digest(tmp_path / "mapping")


def test_distinct_photographs_pass_the_copy_check_and_a_noisy_copy_does_not():
    from cprl_fast.data.synthetic import DUPLICATE_PSNR, check_distinct

    refs = {f"p{k}": square(_photo(k), MIN_SIZE) for k in range(6)}
    check_distinct(refs)  # six photographs of one kind of picture, rectangles moved
    noise = np.random.default_rng(0).normal(0, 4, (MIN_SIZE, MIN_SIZE, 3))
    noisy = np.asarray(refs["p4"], np.float64) + noise
    refs["p4 again"] = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
    with pytest.raises(ValueError, match=rf"'p4' and 'p4 again' are one photograph .* >= "
                       rf"{DUPLICATE_PSNR:g}"):  # fmt: skip
        check_distinct(refs)


def test_the_builtin_references_pass_the_same_checks():
    """builtin and builtin-v2 are written by write_dataset, not synthesize (their scenes are
    fixed): their photographs are distinct, none enlarged, their names make distinct files."""
    from cprl_fast.data.builtin import SCENES_V2, VERSIONS, reference
    from cprl_fast.data.synthetic import check_distinct, check_scene_names

    for scenes, levels in VERSIONS.values():
        check_scene_names(scenes, levels)
    # reference() refuses a photograph it would enlarge; SCENES_V2 holds every scene of either
    check_distinct({scene: reference(scene) for scene in SCENES_V2})


def test_references_in_every_format_read_are_found_and_a_fifo_is_named(tmp_path):
    import os

    for k, name in enumerate(("a.gif", "b.PPM", "c.tiff", "d.jpeg")):
        _photo(k).save(tmp_path / name)
    assert [f.name for f in reference_files(tmp_path)] == ["a.gif", "b.PPM", "c.tiff", "d.jpeg"]
    os.mkfifo(tmp_path / "e.png")  # listed, then refused unopened (it was left out unsaid)
    with pytest.raises(OSError, match=r"e\.png is not a regular file"):
        synthesize(tmp_path, tmp_path / "out", KINDS, size=MIN_SIZE)
    assert not (tmp_path / "out").exists()


def test_the_command_writes_a_dataset_and_names_a_bad_out(refs, tmp_path, capsys):
    from cprl_fast_cli import main

    out = tmp_path / "cli"
    args = ["synthesize", str(refs), "--out", str(out), "--distortions", "blur,jitter",
            "--size", str(MIN_SIZE)]  # fmt: skip
    assert main(args) == 0
    assert "--dataset synthetic --root" in capsys.readouterr().out
    assert len(load_items("synthetic", out)[0]) == 2 * 2 * 5
    assert main(args) == 2
    assert capsys.readouterr().err.strip().endswith("already exists: name a new folder")
