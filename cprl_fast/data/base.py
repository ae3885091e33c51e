"""What every dataset loader returns: a list of items, and a torch Dataset over them.

An :class:`Item` is one image with its normalised score (``[0, 1]``, higher is better,
docs/maths.md §7), its raw score as the dataset ships it, its scene (the reference it was
distorted from; its own name where there is none), and the distortion type and level where
known.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cprl_fast.images import ImageTooLarge, check_resized_pixels, read_image
from cprl_fast.io import printable
from cprl_fast.registry import Registry

log = logging.getLogger("cprl_fast.data")



@dataclass(frozen=True)
class Item:
    """One image of a quality dataset."""

    path: str  #: absolute path of the image file
    score: float  #: normalised quality in [0, 1], higher is better
    raw_score: float  #: the score as shipped (DMOS, MOS 0-100, MOS 1-5, ...)
    scene: str  #: reference / content id: splits never share a scene between train and test
    distortion: str | None = None  #: distortion type where known
    level: int | None = None  #: distortion level where known (1 = mildest)


class DatasetFormatError(ValueError):
    """A dataset's files are there but not in the expected format (missing column, ...)."""


def image_is_readable(path: str | Path, image_size: int | None = None) -> bool:
    """Whether ``path`` decodes (:func:`~cprl_fast.images.read_image`) and, given
    ``image_size``, can have its shorter side resized to it within the pixel limit
    (:func:`~cprl_fast.images.check_resized_pixels`: the default transforms refuse a thin
    strip)."""
    try:
        img = read_image(path)
        if image_size is not None:
            check_resized_pixels(*img.size, image_size)
    except OSError:  # ImageTooLarge included
        return False
    return True


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def check_images_exist(items: list[Item], skip_unreadable: bool,
                       image_size: int | None = None) -> tuple[list[Item], int]:  # fmt: skip
    """Stops at a missing image or (with ``skip_unreadable``) drops the missing, undecodable
    and, given ``image_size``, too thin to resize to it (:func:`image_is_readable`).

    Returns the kept items and the number skipped (which is logged).
    """
    if not skip_unreadable:
        missing = [it.path for it in items if not Path(it.path).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image file(s) listed by the score file are missing, "
                f"the first: {missing[0]}"
            )
        return items, 0
    from tqdm import tqdm

    every = tqdm(items, desc="reading every image (skip_unreadable)", unit="img", leave=False)
    kept = [it for it in every if image_is_readable(it.path, image_size)]
    skipped = len(items) - len(kept)
    if skipped:
        log.warning("skipped %d unreadable or missing image(s) of %d", skipped, len(items))
    return kept, skipped


class IQADataset(torch.utils.data.Dataset):
    """A map-style dataset of ``(image, score)``.

    ``image``: float32 tensor ``[3, H, W]`` in ``[0, 1]`` (after ``transform``, which takes a PIL
    image and returns a tensor); ``score``: float32 scalar tensor in ``[0, 1]``.
    ``items[i]`` / :meth:`meta` give the per-item metadata; ``skipped`` counts images dropped by
    ``skip_unreadable``; ``split_info`` describes the split used.
    """

    def __init__(
        self,
        name: str,
        items: list[Item],
        transform: Callable | None = None,
        skipped: int = 0,
        split_info: dict | None = None,
    ):
        self.name = name
        self.items = list(items)
        self.transform = transform
        self.skipped = skipped
        self.split_info = split_info or {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        img = read_image(item.path)
        if self.transform is not None:
            try:
                x = self.transform(img)
            except ImageTooLarge as err:  # too thin to resize (check_resized_pixels): name it
                raise ImageTooLarge(f"{printable(item.path)}: {err}") from None
        else:
            from cprl_fast.data.transforms import to_tensor

            x = to_tensor(img)
        return x, torch.tensor(item.score, dtype=torch.float32)

    def meta(self, index: int) -> dict:
        return asdict(self.items[index])

    def scores(self) -> torch.Tensor:
        return torch.tensor([it.score for it in self.items], dtype=torch.float32)

    def __repr__(self) -> str:
        scenes = len({i.scene for i in self.items})
        return f"IQADataset({self.name!r}, {len(self)} images, {scenes} scenes)"


# --- the registry of loaders -------------------------------------------------------------------

#: name -> ``fn(root, **options) -> (items, score_file)``
LOADERS = Registry("dataset")
register = LOADERS.register


def same_photographs(a: str | None, b: str | None) -> bool:
    """Whether the datasets named ``a`` and ``b`` are made of the same photographs (their
    loaders registered the same ``photographs``: builtin and builtin-v2), so that a scene of
    one name is the same content in both."""
    if a not in LOADERS or b not in LOADERS:
        return False
    made_of = LOADERS.info(a).get("photographs")
    return made_of is not None and made_of == LOADERS.info(b).get("photographs")


def loader(name: str) -> Callable[..., tuple[list[Item], Path]]:
    return LOADERS.get(name)
