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

Both are written by :func:`cprl_fast.data.synthetic.write_dataset`, which makes a dataset of
this kind from any photographs (``cprl-fast synthesize``); the distortions are those of
:mod:`cprl_fast.data.distortions`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from PIL import Image

from cprl_fast.data.base import Item, register
from cprl_fast.data.distortions import LEVELS, LEVELS_V2, distort, square
from cprl_fast.data.synthetic import SCORE_FILE, check_not_enlarged, read_scores, write_dataset
from cprl_fast.io import file_lock

__all__ = ["LEVELS", "LEVELS_V2", "SCENES", "SCENES_V2", "distort", "generate", "reference"]

README = ("cprl_fast built-in dataset (synthetic): pseudo-MOS = MS-SSIM to the reference, "
          "min-max mapped to [0, 1]. NOT human opinion scores.\n")  # fmt: skip

VERSION = "builtin-v1"
SIZE = 256
#: builtin-v1's scenes (file names in scikit-image's data folder)
SCENES = {
    "astronaut": "astronaut.png", "brick": "brick.png", "camera": "camera.png",
    "chelsea": "chelsea.png", "coffee": "coffee.png", "grass": "grass.png",
    "gravel": "gravel.png", "moon": "moon.png", "motorcycle_left": "motorcycle_left.png",
    "rocket": "rocket.jpg",
}  # fmt: skip
#: builtin-v2 adds every other natural photograph the installed packages ship (scikit-image's
#: ``coins``, ``hubble_deep_field``, ``immunohistochemistry``, ``retina``; matplotlib's
#: ``grace_hopper``) and five distortion types: colour saturation, quantisation, motion blur,
#: ringing and chromatic shift. 15 scenes x 10 types x 5 levels = 750 images.
SCENES_V2 = {
    **SCENES, "coins": "coins.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png", "retina": "retina.jpg", "grace_hopper": "matplotlib:grace_hopper.jpg",
}  # fmt: skip
#: version -> (scenes, distortion levels, what the loader registers it as)
VERSIONS = {"builtin-v1": (SCENES, LEVELS), "builtin-v2": (SCENES_V2, LEVELS_V2)}


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
        return square(check_not_enlarged(img.convert("RGB"), SIZE, str(path)), SIZE)


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
    refs = {scene: reference(scene) for scene in scenes}
    return write_dataset(refs, final, levels, readme=README,
                         desc=f"generating the built-in dataset ({final.name})")  # fmt: skip


def is_generated(name: str, root: str | Path) -> bool:
    """Whether the built-in dataset ``name`` (``builtin`` or ``builtin-v2``) is complete under
    ``root``, so that loading it there writes nothing."""
    version = {"builtin": "builtin-v1"}.get(name, name)
    return version in VERSIONS and (Path(root) / version / SCORE_FILE).is_file()


#: What builtin and builtin-v2 are made of (a loader's ``photographs`` entry): both distort the
#: same scikit-image photographs, a scene named alike in both being the same photograph, so a
#: model trained on one has seen the content of the other's scenes of those names.
PHOTOGRAPHS = "scikit-image"


def _load(version: str, root: Path | None) -> tuple[list[Item], Path]:
    return read_scores(generate(cache_root() if root is None else Path(root), version))


@register(
    "builtin",
    needs_root=False,
    synthetic=True,
    photographs=PHOTOGRAPHS,
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
    photographs=PHOTOGRAPHS,
    about="synthetic, 15 photographs x 50 distortions (10 types), no download",
)
def load_builtin_v2(root: Path | None, **_options) -> tuple[list[Item], Path]:
    """Items of builtin-v2 (750 images, 15 scenes, 10 distortion types), generated under
    ``root`` (default: the cache) first."""
    return _load("builtin-v2", root)
