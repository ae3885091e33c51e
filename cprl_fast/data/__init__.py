"""The four quality datasets of the paper and a built-in synthetic one, with scene-disjoint splits.

    >>> from cprl_fast.data import load_dataset
    >>> train = load_dataset("builtin", split="train", seed=0)          # no download needed
    >>> test = load_dataset("live", "/data/databaserelease2", split="test",
    ...                     split_file="live-0.json")

Names (:data:`DATASETS`, from the loaders' registry): ``live``, ``vcl``, ``livec``, ``koniq``,
``builtin``, ``builtin-v2`` and ``synthetic`` (a folder :func:`synthesize` wrote). Formats: each
loader module's docstring (``live.py``, ``vcl.py``, ``livec.py``, ``koniq.py``, ``builtin.py``,
``synthetic.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from cprl_fast.data import builtin, koniq, live, livec, synthetic, vcl  # noqa: F401  (loaders)
from cprl_fast.data.base import (
    LOADERS,
    DatasetFormatError,
    IQADataset,
    Item,
    check_images_exist,
    file_sha256,
    loader,
)
from cprl_fast.data.decoded import DecodedOnce, decoded_once
from cprl_fast.data.splits import (
    make_record,
    read_record,
    scene_split,
    split_seeds,
)
from cprl_fast.data.synthetic import synthesize
from cprl_fast.data.transforms import test_transform, to_tensor, train_transform
from cprl_fast.io import write_json_atomic

__all__ = [
    "DATASETS",
    "LOADERS",
    "DatasetFormatError",
    "DecodedOnce",
    "IQADataset",
    "Item",
    "decoded_once",
    "load_dataset",
    "load_items",
    "load_splits",
    "split_seeds",
    "synthesize",
    "test_transform",
    "to_tensor",
    "train_transform",
]

log = logging.getLogger("cprl_fast.data")

DATASETS = tuple(sorted(LOADERS))
SPLITS = ("train", "val", "test", "all")


def load_items(name: str, root: str | Path | None = None, **options) -> tuple[list[Item], Path]:
    """Every scored item of dataset ``name`` under ``root`` and the score file they came from."""
    fn = loader(name)
    if not LOADERS.info(name).get("needs_root", True):
        items, score_file = fn(None if root is None else Path(root), **options)
    else:
        if root is None:
            raise ValueError(f"dataset {name!r} needs root, the folder it was unpacked to")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root of {name!r} not found: {root}")
        items, score_file = fn(root, **options)
    check_scores(items, score_file)
    return drop_duplicates(items, score_file), score_file


def drop_duplicates(items: list[Item], score_file: str | Path) -> list[Item]:
    """Items listed twice: the same score twice is kept once (and counted in a warning); two
    different scores for one image is a DatasetFormatError naming both."""
    first: dict[str, Item] = {}
    for it in items:
        seen = first.setdefault(it.path, it)
        if seen is not it and seen.raw_score != it.raw_score:
            raise DatasetFormatError(
                f"{score_file}: {Path(it.path).name} is listed twice with different scores "
                f"({seen.raw_score} and {it.raw_score})"
            )
    if len(first) < len(items):
        log.warning("%s: %d duplicate row(s) with the same score kept once",
                    score_file, len(items) - len(first))  # fmt: skip
    return list(first.values())


def check_scores(items: list[Item], score_file: str | Path) -> None:
    """Every raw score finite and every normalised one in [0, 1], else DatasetFormatError naming
    the score file and the item (one NaN would otherwise make every normalised score NaN)."""
    for k, it in enumerate(items, 1):
        if not math.isfinite(it.raw_score):
            raise DatasetFormatError(
                f"{score_file}: item {k} ({Path(it.path).name}) has a non-finite score "
                f"{it.raw_score!r}"
            )
    for k, it in enumerate(items, 1):
        if not (math.isfinite(it.score) and 0.0 <= it.score <= 1.0):
            raise DatasetFormatError(
                f"{score_file}: item {k} ({Path(it.path).name}) has score {it.raw_score!r}, "
                f"outside the dataset's scale (normalised {it.score!r}, expected in [0, 1])"
            )


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "all",
    **kwargs,
) -> IQADataset:
    """A torch Dataset of ``(image [3, H, W] in [0, 1], score in [0, 1])`` for one split.

    Args:
        name: a name of :data:`DATASETS` (``live``, ``vcl``, ``livec``, ``koniq``, ``builtin``).
        root: the folder the dataset was unpacked to (official or pyiqa layout, detected);
            for ``builtin``, the cache folder (default ``~/.cache/cprl_fast``).
        split: ``train``, ``test`` or ``all`` (``val`` too with ``official_split``).
        kwargs: those of :func:`load_splits`.
    """
    return load_splits(name, root, (split,), **kwargs)[split]


def load_splits(
    name: str,
    root: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    *,
    split_file: str | Path | None = None,
    seed: int = 0,
    train_ratio: float = 0.8,
    val_ratio: float = 0.2,
    folds: int | None = None,
    fold: int = 0,
    official_split: bool = False,
    transform: Callable | None = None,
    image_size: int = 320,
    train_crop: int | None = None,
    hflip: bool = False,
    skip_unreadable: bool = False,
    **options,
) -> dict[str, IQADataset]:
    """Several splits of one dataset, its score file read and its images checked once.

    Args:
        name, root: as :func:`load_dataset`.
        splits: any of ``train``, ``val``, ``test``, ``all``.
        split_file: JSON split to reuse; written there (atomically) if it does not exist yet.
        seed: seed of the 4:1 scene-disjoint split (ignored when ``split_file`` exists).
        train_ratio: share of scenes on the train and val sides together.
        val_ratio: share of those held out for validation (model selection), scene-disjoint.
        folds, fold: K-fold cross-validation by scene instead of ``train_ratio``: the test
            side is fold ``fold`` of ``folds`` (every image is tested once over the folds).
        official_split: the dataset's own split instead (datasets registered with one).
        transform: PIL image -> tensor; default the train (random crop) or test (centre crop)
            transform of docs/maths.md section 7 at ``image_size``.
        image_size: side of the square crops of the default transforms.
        train_crop, hflip: the default train transform's crop (``None``: ``image_size``) and
            random horizontal flips (:func:`train_transform`).
        skip_unreadable: drop (and count, in ``dataset.skipped``) missing or undecodable
            images, and with the default transforms those too thin to resize to
            ``image_size`` within the pixel limit, instead of stopping at the first missing
            one (or failing when the thin one is loaded).
        options: loader options (``resolution`` for KonIQ: ``"1024x768"`` or ``"512x384"``).
    """
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    items, score_file = load_items(name, root, **options)
    items, skipped = check_images_exist(items, skip_unreadable,
                                        image_size if transform is None else None)

    def transform_for(split: str) -> Callable:
        if transform is not None:
            return transform
        if split == "train":
            return train_transform(image_size, train_crop, hflip)
        return test_transform(image_size)

    if official_split:
        official_sets = LOADERS.info(name).get("official_split")
        if official_sets is None:
            having = [n for n in LOADERS if LOADERS.info(n).get("official_split")]
            raise ValueError(f"official_split exists for {', '.join(having)} only, not {name!r}")
        sets = official_sets(Path(root))
        wanted = {"train": {"training"}, "val": {"validation"}, "test": {"test"}}
        out = {}
        for split in splits:
            chosen = (
                items
                if split == "all"
                else [it for it in items if sets.get(Path(it.path).name) in wanted[split]]
            )
            info = {"dataset": name, "official": True, "split": split}
            out[split] = IQADataset(name, chosen, transform_for(split), skipped, info)
        return out
    sha = file_sha256(score_file)
    if split_file is not None and Path(split_file).is_file():
        record = read_record(split_file, name, sha, items)
        if folds is not None and (record.get("folds"), record.get("fold")) != (folds, fold):
            raise ValueError(
                f"split file {split_file} holds fold {record.get('fold')} of "
                f"{record.get('folds')}, not fold {fold} of {folds}: one split file per fold"
            )
    else:
        scenes = scene_split(items, seed, train_ratio, val_ratio, folds, fold)
        record = make_record(
            name, seed, train_ratio, val_ratio, items, str(score_file), sha, scenes, folds, fold
        )
        if split_file is not None:
            write_json_atomic(split_file, record)
    info = {k: v for k, v in record.items() if not k.endswith("_scenes")}
    out = {}
    for split in splits:
        if split == "all":
            chosen = items
        else:
            side = set(record[f"{split}_scenes"])
            chosen = [it for it in items if it.scene in side]
        out[split] = IQADataset(
            name, chosen, transform_for(split), skipped, {**info, "split": split}
        )
    return out
