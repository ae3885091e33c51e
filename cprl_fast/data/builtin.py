"""The built-in datasets: synthetic stand-ins for a quality database, needing no download.

**These scores are not human opinion scores.** Ten natural photographs that scikit-image ships
(``astronaut``, ``brick``, ``camera``, ``chelsea``, ``coffee``, ``grass``, ``gravel``, ``moon``,
``motorcycle_left``, ``rocket``; greyscale ones as RGB), resized and centre-cropped to 256 x 256,
are each distorted by five types at five levels (1 = mildest): Gaussian blur, white Gaussian
noise, JPEG compression, contrast reduction and pixelation (box downsampling then nearest
upsampling): 250 images in 10 scenes. The pseudo-MOS of each is MS-SSIM against its reference
(piq.s ``multi_scale_ssim``, float32), min-max mapped to [0, 1] over the 250 images.

It is generated deterministically (seeded noise, Pillow's encoders, scores rounded to 6
decimals) once into a cache folder (``$CPRL_FAST_CACHE``, else ``~/.cache/cprl_fast``) under
``builtin-v1/``, written to a temporary folder and renamed into place when complete.

``builtin-v2`` (dataset name ``builtin-v2``) is built the same way from 15 photographs and ten
distortion types (:data:`SCENES_V2`, :data:`LEVELS_V2`): 750 images, so that a test split of a
4:1 split holds 150 images of 3 scenes, and 5-fold cross-validation tests every image once.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from cprl_fast.data.base import DatasetFormatError, Item, register
from cprl_fast.data.csvs import column, number, read_csv
from cprl_fast.io import file_lock, umask

VERSION = "builtin-v1"
SIZE = 256
#: builtin-v1's scenes (file names in scikit-image's data folder)
SCENES = {
    "astronaut": "astronaut.png", "brick": "brick.png", "camera": "camera.png",
    "chelsea": "chelsea.png", "coffee": "coffee.png", "grass": "grass.png",
    "gravel": "gravel.png", "moon": "moon.png", "motorcycle_left": "motorcycle_left.png",
    "rocket": "rocket.jpg",
}  # fmt: skip
LEVELS = {
    "blur": (0.8, 1.5, 2.5, 4.0, 6.0),  # Gaussian radius, px
    "noise": (0.02, 0.05, 0.09, 0.14, 0.20),  # standard deviation on [0, 1]
    "jpeg": (50, 25, 12, 6, 2),  # quality
    "contrast": (0.7, 0.5, 0.35, 0.22, 0.12),  # contrast factor
    "pixelate": (2, 3, 4, 6, 9),  # block size, px
}
#: builtin-v2 adds every other natural photograph the installed packages ship (scikit-image's
#: ``coins``, ``hubble_deep_field``, ``immunohistochemistry``, ``retina``; matplotlib's
#: ``grace_hopper``) and five distortion types: colour saturation, quantisation, motion blur,
#: ringing and chromatic shift. 15 scenes x 10 types x 5 levels = 750 images.
SCENES_V2 = {
    **SCENES, "coins": "coins.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png", "retina": "retina.jpg", "grace_hopper": "matplotlib:grace_hopper.jpg",
}  # fmt: skip
LEVELS_V2 = {
    **LEVELS,
    "saturation": (0.6, 0.4, 0.2, 0.1, 0.0),  # colour factor (0: greyscale)
    "quantise": (32, 16, 8, 5, 3),  # grey levels per channel
    "motion": (5, 9, 15, 23, 33),  # horizontal motion-blur length, px
    "ringing": (0.5, 0.35, 0.22, 0.14, 0.08),  # ideal low-pass cut-off, share of Nyquist
    "chroma": (1, 2, 4, 6, 9),  # red and blue channels shifted apart, px
}
#: version -> (scenes, distortion levels, what the loader registers it as)
VERSIONS = {"builtin-v1": (SCENES, LEVELS), "builtin-v2": (SCENES_V2, LEVELS_V2)}
SCORE_FILE = "scores.csv"


def cache_root() -> Path:
    base = os.environ.get("CPRL_FAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cprl_fast"
    )
    return Path(base)


def _photo(name: str) -> Path:
    """A photograph the installed packages ship: ``"file"`` in scikit-image's data folder, or
    ``"matplotlib:file"`` in matplotlib's sample data."""
    package, _, file = name.rpartition(":")
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / file
    import skimage.data

    return Path(skimage.data.__file__).parent / file


@functools.cache
def reference(scene: str) -> Image.Image:
    """One reference photograph, RGB, 256 x 256 (cached: do not modify the returned image)."""
    path = _photo(SCENES_V2[scene])
    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    scale = SIZE / min(w, h)
    img = img.resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - SIZE) // 2, (h - SIZE) // 2
    return img.crop((left, top, left + SIZE, top + SIZE))


def distort(img: Image.Image, kind: str, level: int, seed: int) -> Image.Image:
    """``img`` distorted by ``kind`` at ``level`` (1..5); ``seed`` drives the noise."""
    if kind not in LEVELS_V2:
        raise ValueError(f"unknown distortion {kind!r}")
    p = LEVELS_V2[kind][level - 1]
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=p))
    if kind == "noise":
        arr = np.asarray(img, dtype=np.float64) / 255.0
        arr = arr + np.random.default_rng(seed).normal(0.0, p, arr.shape)
        return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(p))
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")
    if kind == "contrast":
        return ImageEnhance.Contrast(img).enhance(p)
    if kind == "pixelate":
        small = img.resize((SIZE // p, SIZE // p), Image.BOX)
        return small.resize((SIZE, SIZE), Image.NEAREST)
    arr = np.asarray(img, dtype=np.float64) / 255.0
    if kind == "saturation":
        return ImageEnhance.Color(img).enhance(p)
    if kind == "quantise":
        arr = np.round(arr * (p - 1)) / (p - 1)
    elif kind == "motion":
        kernel = np.ones(int(p)) / p
        arr = np.apply_along_axis(lambda r: np.convolve(np.pad(r, p // 2, mode="edge"), kernel,
                                                        mode="valid"), 1, arr)  # fmt: skip
    elif kind == "ringing":  # an ideal (brick-wall) low-pass: Gibbs ringing at edges
        f = np.fft.fft2(arr, axes=(0, 1))
        fy, fx = np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE), indexing="ij")
        keep = (np.abs(fy) <= p / 2) & (np.abs(fx) <= p / 2)
        arr = np.real(np.fft.ifft2(f * keep[..., None], axes=(0, 1)))
    elif kind == "chroma":
        arr = arr.copy()
        arr[..., 0] = np.roll(arr[..., 0], p, axis=1)
        arr[..., 2] = np.roll(arr[..., 2], -p, axis=1)
    return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))


def _ms_ssim(a: Image.Image, b: Image.Image) -> float:
    import piq
    import torch

    def t(img):
        return (
            torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
            .permute(2, 0, 1)[None]
            .contiguous()
        )

    return float(piq.multi_scale_ssim(t(a), t(b), data_range=1.0))


def generate(root: Path, version: str = VERSION) -> Path:
    """Writes the dataset ``version`` (``builtin-v1`` or ``builtin-v2``) under ``root`` (if not
    already complete); returns its folder.

    Safe under concurrency (``torchrun`` ranks on a fresh machine): generation holds a file lock
    beside the folder, a process that waited for it finds the dataset complete and returns, and
    a complete copy is never removed (it is built in a temporary folder and renamed into place)."""
    final = root / version
    if (final / SCORE_FILE).is_file():
        return final
    with file_lock(root / f".{version}.lock"):
        if (final / SCORE_FILE).is_file():  # another process made it while this one waited
            return final
        return _generate(root, final, *VERSIONS[version])


def _generate(root: Path, final: Path, scenes: dict, levels: dict) -> Path:
    from tqdm import tqdm

    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    os.chmod(work, 0o777 & ~umask())  # mkdtemp's 0700 would outlive the rename
    try:
        (work / "refs").mkdir()
        (work / "images").mkdir()
        rows = []
        jobs = [(s, k, lv) for s in scenes for k in levels for lv in range(1, 6)]
        refs = {}
        desc = f"generating the built-in dataset ({final.name})"
        for scene, kind, level in tqdm(jobs, desc=desc, unit="img"):
            if scene not in refs:
                refs[scene] = reference(scene)
                refs[scene].save(work / "refs" / f"{scene}.png")
            seed = zlib.crc32(f"{scene}/{kind}/{level}".encode())
            img = distort(refs[scene], kind, level, seed)
            name = f"{scene}_{kind}_{level}.png"
            img.save(work / "images" / name)
            rows.append((name, scene, kind, level, _ms_ssim(img, refs[scene])))
        raw = np.array([r[4] for r in rows])
        q = (raw - raw.min()) / (raw.max() - raw.min())
        with open(work / SCORE_FILE, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["image", "scene", "distortion", "level", "ms_ssim", "score"])
            for (name, scene, kind, level, m), qk in zip(rows, q, strict=True):
                writer.writerow([f"images/{name}", scene, kind, level, f"{m:.6f}", f"{qk:.6f}"])
        (work / "README.txt").write_text(
            "cprl_fast built-in dataset (synthetic): pseudo-MOS = MS-SSIM to the reference, "
            "min-max mapped to [0, 1]. NOT human opinion scores.\n"
        )
        if final.exists():  # an incomplete earlier attempt (a complete one returned above)
            shutil.rmtree(final)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def is_generated(name: str, root: str | Path) -> bool:
    """Whether the built-in dataset ``name`` (``builtin`` or ``builtin-v2``) is complete under
    ``root``, so that loading it there writes nothing."""
    version = {"builtin": "builtin-v1"}.get(name, name)
    return version in VERSIONS and (Path(root) / version / SCORE_FILE).is_file()


def _load(version: str, root: Path | None) -> tuple[list[Item], Path]:
    folder = generate(cache_root() if root is None else Path(root), version)
    score_file = folder / SCORE_FILE
    header, rows = read_csv(score_file)
    cols = [column(header, score_file, c) for c in ("image", "scene", "distortion", "level")]
    ms, score = column(header, score_file, "ms_ssim"), column(header, score_file, "score")
    items = []
    for i, r in enumerate(rows):
        image, scene, kind, level = (r[c] for c in cols)
        items.append(
            Item(str(folder / image), number(r, score, score_file, i + 2),
                 number(r, ms, score_file, i + 2), scene, kind, int(level))
        )  # fmt: skip
    if not items:
        raise DatasetFormatError(f"{score_file} lists no image")
    return items, score_file


@register(
    "builtin",
    needs_root=False,
    synthetic=True,
    about="synthetic, 10 photographs x 25 distortions, no download",
)
def load_builtin(root: Path | None, **_options) -> tuple[list[Item], Path]:
    """Items of the built-in dataset (builtin-v1), generating it under ``root`` (default: the
    cache) first."""
    return _load("builtin-v1", root)


@register(
    "builtin-v2",
    needs_root=False,
    synthetic=True,
    about="synthetic, 15 photographs x 50 distortions (10 types), no download",
)
def load_builtin_v2(root: Path | None, **_options) -> tuple[list[Item], Path]:
    """Items of builtin-v2 (750 images, 15 scenes, 10 distortion types), generated under
    ``root`` (default: the cache) first."""
    return _load("builtin-v2", root)
