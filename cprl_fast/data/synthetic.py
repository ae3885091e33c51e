"""A KADID-style quality dataset from any folder of pristine photographs: each reference
distorted by every chosen type (:data:`cprl_fast.data.distortions.DISTORTIONS`) at five levels,
each image scored by its pseudo-MOS (MS-SSIM to its reference, min-max mapped to [0, 1] over the
dataset). The built-in datasets are made by the same writer.

    >>> from cprl_fast.data import synthesize
    >>> synthesize("my_photos/", "my_dataset/", workers=2)  # doctest: +SKIP
    >>> load_dataset("synthetic", "my_dataset/", split="train")  # doctest: +SKIP

The output folder holds ``refs/<scene>.png`` (each reference, shorter side resized to ``size``
and centre-cropped square), ``images/<scene>_<type>_<level>.png``, ``scores.csv`` (image,
scene, distortion, level, ms_ssim, score) and a README. A scene is a reference's file name
without its extension; the scene-disjoint splits keep each scene's images on one side. So that
they can, and so that every label is its image's, the references are checked before any image
is distorted: none is enlarged (its shorter side is at least ``size``: an enlarged reference is
not pristine), no two are one photograph (:func:`check_distinct`), and no two scenes' names make
one file name, on a file system that ignores case too (:func:`check_scene_names`). The names
are checked before anything is written, the pixels as each reference is read and saved into
the dataset's temporary folder (a refusal removes it).

Deterministic: the noise of each image is seeded by its scene, type and level, so the same
references give the same bytes on any machine and with any number of ``workers`` (processes) or
threads (with one worker, the calling process computes and writes the images in up to
:data:`MAX_THREADS` threads: builtin-v2's 750 images in 20-21 s against 31-32 s on the
calling thread alone, the project's 2-core VM, 3 alternating runs each, wall time). The folder
is built beside ``out`` and renamed into place when complete, so an interrupted run leaves no
partial dataset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import functools
import multiprocessing
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cprl_fast.checks import check_count, check_named_once
from cprl_fast.data.base import DatasetFormatError, Item, register
from cprl_fast.data.csvs import column, listed_file, number, read_csv
from cprl_fast.data.distortions import DISTORTIONS, distort, ms_ssim, square
from cprl_fast.images import DEFAULT_MAX_PIXELS, folder_images, image_suffixes, read_image
from cprl_fast.io import printable, umask

SCORE_FILE = "scores.csv"
#: The smallest image side MS-SSIM's five scales (11-pixel windows) can score.
MIN_SIZE = 161
README = ("Synthetic quality dataset made by cprl_fast: pseudo-MOS = MS-SSIM to the reference, "
          "min-max mapped to [0, 1]. NOT human opinion scores.\n")  # fmt: skip


def reference_files(references: str | Path | Iterable[str | Path]) -> list[Path]:
    """The photographs ``references`` names: a folder (its image files, recursively, sorted) or
    files. A missing path, a folder without images or two files of one scene name is an error
    naming them."""
    paths = [Path(references)] if isinstance(references, (str, Path)) else \
        [Path(p) for p in references]  # fmt: skip
    files = []
    for p in paths:
        if p.is_dir():
            found = folder_images(p)
            if not found:
                raise FileNotFoundError(f"no reference images ({', '.join(image_suffixes())}) "
                                        f"in {p}")  # fmt: skip
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"reference not found: {p}")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem.casefold() in seen:
            raise ValueError(f"two references make scene {f.stem!r}: {seen[f.stem.casefold()]} "
                             f"and {f}; rename one")  # fmt: skip
        seen[f.stem.casefold()] = f
    return files


def check_scene_names(scenes: Iterable[str], kinds: Iterable[str]) -> None:
    """Raises ``ValueError`` where two (scene, type) pairs would write one image file
    (``<scene>_<type>_<level>.png``: scene ``x_lens`` blurred and scene ``x`` lens-blurred
    both make ``x_lens_blur_1.png``), compared ignoring case (as macOS and Windows file
    systems do), naming both scenes; the second would overwrite the first's image and each
    keep its own score."""
    kinds = list(kinds)
    made: dict[str, tuple[str, str]] = {}
    for scene in scenes:
        for kind in kinds:
            name = f"{scene}_{kind}"
            other = made.setdefault(name.casefold(), (scene, kind))
            if other != (scene, kind):
                raise ValueError(f"scenes {other[0]!r} ({other[1]}) and {scene!r} ({kind}) "
                                 f"would both write images/{name}_<level>.png: rename one "
                                 "reference")  # fmt: skip


#: Two references this alike once resized and cropped (PSNR in dB, 8-bit) are one photograph
#: twice. Measured on 6 of scikit-image's photographs at 256 px (2026-12-07): a copy saved as
#: JPEG at quality 30 to 90, or at half the size, 32.4-52.2 dB (one at 28.1 was enlarged from
#: 151 px, which synthesize refuses); two different photographs at most 17.8; one shifted by
#: 8 px 15.7-24.2 (not caught: another framing).
DUPLICATE_PSNR = 30.0


def _dhash(img: Image.Image) -> int:
    """A 64-bit difference hash: the signs of horizontal steps in a 9 x 8 grey thumbnail."""
    g = np.asarray(img.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    return int.from_bytes(np.packbits(g[:, 1:] > g[:, :-1]).tobytes(), "big")


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def check_distinct(refs: Mapping[str, Image.Image]) -> None:
    """Raises ``ValueError`` naming two scenes of ``refs`` (scene -> RGB reference, all one
    size) that are one photograph: PSNR at least :data:`DUPLICATE_PSNR` (a copy saved again,
    re-encoded or resized). As two scenes they could land on both sides of a scene-disjoint
    split, and the test side would hold a photograph the model trained on. Candidates are the
    pairs whose difference hashes share one of four 16-bit bands and differ in at most 3 of
    their 64 bits (copies measured within 3): PSNR is computed for those alone (3000 references
    whose top third is one flat sky, so that they share a band: 0.9 s on the project's VM)."""
    _check_hashes({scene: _dhash(img) for scene, img in refs.items()}, refs.__getitem__)


def _check_hashes(hashes: Mapping[str, int], reference: Callable[[str], Image.Image]) -> None:
    """:func:`check_distinct` of the scenes of ``hashes`` (scene -> :func:`_dhash`), each
    reference got by ``reference(scene)`` only where its pair is a candidate."""
    buckets: dict[tuple[int, int], list[str]] = {}
    for scene, h in hashes.items():
        for band in range(4):
            buckets.setdefault((band, (h >> (16 * band)) & 0xFFFF), []).append(scene)
    checked: set[tuple[str, str]] = set()
    for scenes in buckets.values():  # a band many share (a flat sky's) costs popcounts only
        for i, a in enumerate(scenes):
            for b in scenes[i + 1 :]:
                if (hashes[a] ^ hashes[b]).bit_count() > 3 or (a, b) in checked:
                    continue
                checked.add((a, b))
                psnr = _psnr(reference(a), reference(b))
                if psnr >= DUPLICATE_PSNR:
                    raise ValueError(f"references {a!r} and {b!r} are one photograph (PSNR "
                                     f"{psnr:.1f} dB >= {DUPLICATE_PSNR:g} once resized): as "
                                     "two scenes they could be split between training and "
                                     "test; leave one out")  # fmt: skip


def check_not_enlarged(img: Image.Image, size: int, name: str) -> Image.Image:
    """``img``, or ``ValueError`` naming it (as ``name``) where its shorter side is under
    ``size`` px: resized up to ``size`` it would be blurred, no longer a pristine reference,
    and every pseudo-MOS measured from it would be off."""
    w, h = img.size
    if min(w, h) < size:
        fix = f"use a size of at most {min(w, h)} or leave it out" if min(w, h) >= MIN_SIZE \
            else "leave it out"  # fmt: skip
        raise ValueError(f"reference {name} is {w} x {h} px, smaller than size {size} on its "
                         f"shorter side (enlarged, it would not be pristine): {fix}")  # fmt: skip
    return img


def check_distortions(kinds: Iterable[str]) -> list[str]:
    """The distortion types as a list: known, at least one, each once (twice, every image of
    the type was written twice and listed twice in scores.csv); else a ValueError."""
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in DISTORTIONS]
    if unknown or not kinds:
        raise ValueError(f"distortions must name types of {', '.join(DISTORTIONS)}, "
                         f"got {', '.join(unknown) or 'none'}")  # fmt: skip
    check_named_once(kinds, "distortions")
    return kinds


def synthesize(references: str | Path | Iterable[str | Path], out: str | Path,
               distortions: Sequence[str] | None = None, size: int = 256,
               workers: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS,
               progress: bool = True) -> Path:  # fmt: skip
    """Writes the dataset of ``references`` (a folder or image files; see the module's
    docstring) into ``out``, which must not exist yet; returns ``out``. ``distortions``: the
    types (default: every one of :data:`DISTORTIONS`); ``size``: the side of every image, px;
    ``workers``: processes computing images (started with ``spawn``: a script that calls this
    with more than one worker needs the ``if __name__ == "__main__":`` guard; the command line
    has it; with 1, the calling process uses up to :data:`MAX_THREADS` threads);
    ``max_pixels``: the largest reference read."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"output folder already exists: {out} (choose a new one)")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= 4096:
        raise ValueError(f"size must be an integer side in pixels, {MIN_SIZE} to 4096 (MS-SSIM's "
                         f"five scales need {MIN_SIZE}), got {size!r}")  # fmt: skip
    check_count(workers, "workers")
    kinds = check_distortions(DISTORTIONS if distortions is None else distortions)
    files = reference_files(references)
    check_scene_names((f.stem for f in files), kinds)
    from tqdm import tqdm

    with tqdm(files, desc="reading the references", unit="img", disable=not progress) as reading:
        refs = ((f.stem, square(check_not_enlarged(read_image(f, max_pixels), size,
                                                   printable(str(f))),
                                size, max_pixels, f"image {printable(str(f))}"))
                for f in reading)  # fmt: skip
        return write_dataset(refs, out, {k: DISTORTIONS[k] for k in kinds}, workers, progress,
                             distinct=True)  # fmt: skip


def _seed(scene: str, kind: str, level: int) -> int:
    return zlib.crc32(f"{scene}/{kind}/{level}".encode())


#: Most threads that write a dataset in the calling process (``workers`` 1): PIL, NumPy and
#: torch release the interpreter lock for most of each image's work.
MAX_THREADS = 8
#: References a process keeps decoded while it writes a dataset: the jobs come scene by scene,
#: so the threads (or one worker's chunk of jobs) work on one or two scenes at a time.
KEPT_REFERENCES = 2 * MAX_THREADS


@functools.lru_cache(maxsize=KEPT_REFERENCES)
def _reference(path: Path) -> Image.Image:
    """A reference the dataset being written saved as ``refs/<scene>.png``, decoded (RGB)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def _init_worker() -> None:
    """A worker process's start: one torch thread (one process per core). The calling process
    (``workers`` 1) keeps its threads: it goes on to train or score."""
    import torch

    torch.set_num_threads(1)


def _one(job: tuple[str, str, int], folder: Path) -> float:
    """Writes one distorted image into ``folder/images`` (as ``<scene>_<type>_<level>.png``),
    distorting ``folder/refs/<scene>.png``, and returns its MS-SSIM to that reference."""
    scene, kind, level = job
    ref = _reference(folder / "refs" / f"{scene}.png")
    img = distort(ref, kind, level, _seed(scene, kind, level))
    img.save(folder / "images" / _name(job))
    return ms_ssim(img, ref)


def _name(job: tuple[str, str, int]) -> str:
    scene, kind, level = job
    return f"{scene}_{kind}_{level}.png"


@contextlib.contextmanager
def _in_threads(jobs: list, folder: Path) -> Iterator[Iterator[float]]:
    """``_one`` over ``jobs`` in order, computed by up to :data:`MAX_THREADS` threads (the
    usable cores), torch on one thread each meanwhile (its count restored after)."""
    import torch

    from cprl_fast.threads import available_cores

    n = min(MAX_THREADS, available_cores(), len(jobs))
    if n <= 1:
        yield (_one(job, folder) for job in jobs)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="synthesize") as pool:
            futures = [pool.submit(_one, job, folder) for job in jobs]
            try:
                yield (f.result() for f in futures)
            finally:
                for f in futures:
                    f.cancel()
    finally:
        torch.set_num_threads(before)


def scene_references(items: Iterable[Item]) -> list[Path]:
    """``refs/<scene>.png`` beside the ``images/`` folder of a dataset that :func:`write_dataset`
    wrote (builtin, builtin-v2, ``cprl-fast synthesize``), one per scene of ``items`` (the
    :class:`~cprl_fast.data.base.Item` of one split), in scene order: the pristine photographs
    of that split's scenes alone. A missing file is an error naming it."""
    found: dict[str, Path] = {}
    for item in items:
        if item.scene not in found:
            found[item.scene] = Path(item.path).parent.parent / "refs" / f"{item.scene}.png"
    missing = [f for f in found.values() if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no pristine reference of scene {missing[0].stem!r}: "
                                f"{missing[0]} does not exist (datasets written by "
                                "cprl-fast synthesize have one per scene)")  # fmt: skip
    return [found[s] for s in sorted(found)]


def _save_references(refs: Mapping[str, Image.Image] | Iterable[tuple[str, Image.Image]],
                     folder: Path) -> dict[str, int]:  # fmt: skip
    """Saves each reference of ``refs`` as ``folder/<scene>.png`` as it comes (one in memory at
    a time where ``refs`` makes them one by one); returns scene -> :func:`_dhash`."""
    hashes = {}
    for scene, img in refs.items() if isinstance(refs, Mapping) else refs:
        img = img.convert("RGB") if img.mode != "RGB" else img
        img.save(folder / f"{scene}.png")
        hashes[scene] = _dhash(img)
    return hashes


def write_dataset(refs: Mapping[str, Image.Image] | Iterable[tuple[str, Image.Image]],
                  out: Path, levels: Mapping[str, Sequence[float]], workers: int = 1,
                  progress: bool = True, readme: str = README, desc: str | None = None,
                  distinct: bool = False) -> Path:  # fmt: skip
    """Writes ``refs`` (scene -> reference, or ``(scene, reference)`` pairs, which may be made
    one at a time) distorted by each type of ``levels`` at its five levels into ``out`` (built
    in a temporary folder beside it, then renamed into place); returns ``out``. ``readme``: the
    text of README.txt; ``desc``: the progress bar's; ``distinct``: first check that no two
    references are one photograph (:func:`check_distinct`).

    Memory: each reference is saved as ``refs/<scene>.png`` as it comes, and the images are
    computed from those files, :data:`KEPT_REFERENCES` decoded at a time per process, so a
    dataset of many references never holds them all (nor, with ``workers``, one copy each)."""
    from tqdm import tqdm

    made = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # innermost first
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    os.chmod(work, 0o777 & ~umask())  # mkdtemp's 0700 would outlive the rename
    try:
        (work / "refs").mkdir()
        (work / "images").mkdir()
        scenes = _save_references(refs, work / "refs")
        if distinct:
            _check_hashes(scenes, lambda scene: _reference(work / "refs" / f"{scene}.png"))
        jobs = [(s, k, lv) for s in scenes for k in levels for lv in range(1, 6)]
        bar = tqdm(total=len(jobs), desc=desc or f"generating {out.name}", unit="img",
                   disable=not progress)  # fmt: skip
        rows = []
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            if workers == 1:
                done = stack.enter_context(_in_threads(jobs, work))
            else:  # each process reads the references it needs from refs/
                pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker))  # fmt: skip
                stack.callback(pool.shutdown, cancel_futures=True)
                done = pool.map(functools.partial(_one, folder=work), jobs, chunksize=8)
            for job, m in zip(jobs, done, strict=True):
                rows.append((_name(job), *job, m))
                bar.update()
        raw = np.array([r[4] for r in rows])
        span = raw.max() - raw.min()
        q = (raw - raw.min()) / span if span > 0 else np.ones_like(raw)
        with open(work / SCORE_FILE, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["image", "scene", "distortion", "level", "ms_ssim", "score"])
            for (name, scene, kind, level, m), qk in zip(rows, q, strict=True):
                writer.writerow([f"images/{name}", scene, kind, level, f"{m:.6f}", f"{qk:.6f}"])
        (work / "README.txt").write_text(readme)
        if out.exists():  # an incomplete earlier attempt of the caller's (builtin's lock)
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for d in made:  # a reference refused, or a failure: no folder left that it made
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        _reference.cache_clear()  # no reference kept decoded
    return out


def read_scores(folder: Path) -> tuple[list[Item], Path]:
    """The items of a dataset this module wrote (``folder/scores.csv``), each with its scene,
    distortion and level; a malformed score file is an error naming it."""
    score_file = folder / SCORE_FILE
    if not score_file.is_file():
        raise FileNotFoundError(f"no {SCORE_FILE} in {folder}: make one with "
                                "cprl-fast synthesize")  # fmt: skip
    header, rows = read_csv(score_file)
    cols = [column(header, score_file, c) for c in ("image", "scene", "distortion", "level")]
    ms, score = column(header, score_file, "ms_ssim"), column(header, score_file, "score")
    items = []
    for i, r in enumerate(rows):
        image, scene, kind, level = (r[c] for c in cols)
        where = f"{score_file}, row {i + 2}"
        if not re.fullmatch(r"[0-9]+", level.strip()):
            raise DatasetFormatError(f"{where}: column {cols[3]!r} is not a level (an integer "
                                     f">= 0): {level!r}")  # fmt: skip
        items.append(
            Item(str(listed_file(folder, image, where)), number(r, score, score_file, i + 2),
                 number(r, ms, score_file, i + 2), scene, kind, int(level))
        )  # fmt: skip
    if not items:
        raise DatasetFormatError(f"{score_file} lists no image")
    return items, score_file


@register("synthetic", synthetic=True,
          about="a dataset of cprl-fast synthesize (--root: its folder)")  # fmt: skip
def load_synthetic(root: Path, **_options) -> tuple[list[Item], Path]:
    """Items of a dataset :func:`synthesize` wrote into ``root``."""
    return read_scores(root)
