"""Scene-disjoint train/test splits (docs/maths.md §7), written as JSON and reused.

A split file records the dataset, seed, ratios, the score file and its SHA-256, the counts and
the scenes on each side (train, val, test); loading it checks it completely against the dataset
and score file at hand (:func:`read_record`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cprl_fast.checks import check_seed
from cprl_fast.data.base import Item
from cprl_fast.io import read_json


def split_seeds(n: int = 10, start: int = 0) -> list[int]:
    """The seeds of the paper's "median over 10 random splits" protocol."""
    return list(range(start, start + n))


#: The sides of a split, in order: fit on ``train``, select (best.pt) on ``val``, report ``test``.
SIDES = ("train", "val", "test")


def scene_split(
    items: list[Item], seed: int, train_ratio: float = 0.8, val_ratio: float = 0.2,
    folds: int | None = None, fold: int = 0,
) -> dict[str, list[str]]:  # fmt: skip
    """Scenes of each side: a seeded permutation of the sorted scene ids; the first
    ``round(train_ratio * scenes)`` (at least one, and at least one scene left for test) are
    the training scenes, of which the last ``round(val_ratio * n)`` (at least one where n >= 2
    and ``val_ratio > 0``) are held out for validation. The train+val / test partition does not
    depend on ``val_ratio``: a seed's test scenes are the same with or without validation.

    With ``folds = K``: K-fold cross-validation by scene instead of the ratio: the permutation
    is cut into K near-equal groups (``numpy.array_split``), group ``fold`` is the test side and
    validation is carved from the others as above, so over ``fold = 0 .. K-1`` every image is
    a test image exactly once."""
    check_seed(seed, "split_seed")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    scenes = sorted({it.scene for it in items})
    if len(scenes) < 2:
        raise ValueError(f"a scene-disjoint split needs at least 2 scenes, got {len(scenes)}")
    order = [scenes[i] for i in np.random.default_rng(seed).permutation(len(scenes))]
    check_split_folds(folds, fold, len(scenes))
    if folds is None:
        n_fit = min(max(round(train_ratio * len(scenes)), 1), len(scenes) - 1)
        fit, test = order[:n_fit], order[n_fit:]
    else:
        groups = np.array_split(np.arange(len(scenes)), folds)
        test = [order[i] for i in groups[fold]]
        fit = [order[i] for k, g in enumerate(groups) if k != fold for i in g]
    n_val = 0
    if val_ratio > 0 and len(fit) >= 2:
        n_val = min(max(round(val_ratio * len(fit)), 1), len(fit) - 1)
    return {
        "train": sorted(fit[: len(fit) - n_val]),
        "val": sorted(fit[len(fit) - n_val :]),
        "test": sorted(test),
    }


def check_split_folds(folds: int | None, fold: int, scenes: int | None = None) -> None:
    """:func:`check_fold`, where ``folds`` None (the ratio split) needs ``fold`` 0: a fold
    without folds is an error, never ignored."""
    if folds is None:
        if fold != 0:
            raise ValueError(f"fold={fold!r} needs folds (K-fold cross-validation)")
    else:
        check_fold(folds, fold, scenes)


def check_fold(folds: int, fold: int, scenes: int | None = None) -> None:
    """``folds >= 2`` (at most the number of scenes) and ``0 <= fold < folds``."""
    if not (isinstance(folds, int) and folds >= 2):
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    if scenes is not None and folds > scenes:
        raise ValueError(f"folds must be at most the {scenes} scenes of the dataset, got {folds}")
    if not (isinstance(fold, int) and 0 <= fold < folds):
        raise ValueError(f"fold must be an int in [0, {folds}), got {fold!r}")


def side_counts(items: list[Item], scenes: dict[str, list[str]]) -> dict[str, int]:
    """Images and scenes on each side."""
    counts = {}
    for side in SIDES:
        chosen = set(scenes.get(side, []))
        counts[f"{side}_images"] = sum(it.scene in chosen for it in items)
        counts[f"{side}_scenes"] = len(chosen)
    return counts


def make_record(
    dataset: str, seed: int, train_ratio: float, val_ratio: float, items: list[Item],
    score_file: str, score_sha256: str, scenes: dict[str, list[str]],
    folds: int | None = None, fold: int = 0,
) -> dict:  # fmt: skip
    return {
        "dataset": dataset,
        "seed": seed,
        "train_ratio": train_ratio,
        "val_ratio": val_ratio,
        **({"folds": folds, "fold": fold} if folds is not None else {}),
        "score_file": os.path.basename(score_file),
        "score_sha256": score_sha256,
        "counts": side_counts(items, scenes),
        **{f"{side}_scenes": scenes[side] for side in SIDES},
    }


def read_record(path: str | Path, dataset: str, score_sha256: str, items: list[Item]) -> dict:
    """A split file, checked completely against the dataset at hand: its name and score file's
    hash, every scene of the items on exactly one side and no unknown scene, the counts, and,
    where it names a seed, that the seed gives these scenes (a hand-made split says
    ``"seed": null``). A file from before validation sides (no ``val_scenes``) has none. The
    record returned holds the sides' ``counts`` (computed where the file holds none)."""
    record = read_json(path, "split file")
    if not isinstance(record, dict):
        raise ValueError(f"split file {path} must hold a JSON object, got {type(record).__name__}")
    for key in ("dataset", "score_sha256", "train_scenes", "test_scenes"):
        if key not in record:
            raise ValueError(f"split file {path} has no {key!r} entry")
    record.setdefault("val_scenes", [])
    for side in SIDES:
        value = record[f"{side}_scenes"]
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(
                f"split file {path}: {side}_scenes must be a list of scene names, got {value!r}"
            )
    if record["dataset"] != dataset:
        raise ValueError(f"split file {path} is for dataset {record['dataset']!r}, not {dataset!r}")
    if record["score_sha256"] != score_sha256:
        raise ValueError(
            f"split file {path} was made from a different score file (SHA-256 "
            f"{str(record['score_sha256'])[:12]}..., this one {score_sha256[:12]}...)"
        )
    scenes = {side: record[f"{side}_scenes"] for side in SIDES}
    for i, a in enumerate(SIDES):
        for b in SIDES[i + 1 :]:
            both = sorted(set(scenes[a]) & set(scenes[b]))
            if both:
                raise ValueError(f"split file {path} puts scene {both[0]!r} on both {a} and {b}")
    known = {it.scene for it in items}
    listed = set().union(*map(set, scenes.values()))
    unknown, missing = sorted(listed - known), sorted(known - listed)
    if unknown:
        raise ValueError(
            f"split file {path} names {len(unknown)} scene(s) the dataset does not have "
            f"(first: {unknown[0]!r})"
        )
    if missing:
        raise ValueError(
            f"split file {path} puts {len(missing)} scene(s) of the dataset on no side "
            f"(first: {missing[0]!r})"
        )
    counts = side_counts(items, scenes)
    for key, value in (record.get("counts") or {}).items():
        if key in counts and value != counts[key]:
            raise ValueError(
                f"split file {path} says {key}={value!r}, but its scenes hold {counts[key]}"
            )
    seed = record.get("seed")
    if seed is not None:
        expected = scene_split(items, seed, record.get("train_ratio", 0.8),
                               record.get("val_ratio", 0.0), record.get("folds"),
                               record.get("fold", 0))  # fmt: skip
        if {k: sorted(v) for k, v in scenes.items()} != expected:
            raise ValueError(
                f"split file {path}: its scenes are not those seed {seed} gives (edited by "
                'hand? a hand-made split says "seed": null)'
            )
    # a hand-made file may hold no counts: they identify the split in a model's card
    record.setdefault("counts", counts)
    return record
