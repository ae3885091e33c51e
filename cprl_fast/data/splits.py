"""Scene-disjoint train/test splits (docs/maths.md §7), written as JSON and reused.

A split file records the dataset, seed, ratio, the score file and its SHA-256, the counts and
the scenes on each side; loading it checks that it belongs to the dataset and score file at hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cprl_fast.data.base import Item


def split_seeds(n: int = 10, start: int = 0) -> list[int]:
    """The seeds of the paper's "median over 10 random splits" protocol."""
    return list(range(start, start + n))


def scene_split(
    items: list[Item], seed: int, train_ratio: float = 0.8
) -> tuple[list[str], list[str]]:
    """Scenes of the train and test sides: a seeded permutation of the sorted scene ids, the first
    ``round(train_ratio * scenes)`` (at least one on each side) for training."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    scenes = sorted({it.scene for it in items})
    if len(scenes) < 2:
        raise ValueError(f"a scene-disjoint split needs at least 2 scenes, got {len(scenes)}")
    order = np.random.default_rng(seed).permutation(len(scenes))
    n_train = min(max(round(train_ratio * len(scenes)), 1), len(scenes) - 1)
    train = sorted(scenes[i] for i in order[:n_train])
    test = sorted(scenes[i] for i in order[n_train:])
    return train, test


def make_record(
    dataset: str, seed: int, train_ratio: float, items: list[Item], score_file: str,
    score_sha256: str, train_scenes: list[str], test_scenes: list[str],
) -> dict:  # fmt: skip
    train_set = set(train_scenes)
    n_train = sum(it.scene in train_set for it in items)
    return {
        "dataset": dataset,
        "seed": seed,
        "train_ratio": train_ratio,
        "score_file": os.path.basename(score_file),
        "score_sha256": score_sha256,
        "counts": {
            "train_images": n_train,
            "test_images": len(items) - n_train,
            "train_scenes": len(train_scenes),
            "test_scenes": len(test_scenes),
        },
        "train_scenes": train_scenes,
        "test_scenes": test_scenes,
    }


def read_record(path: str | Path, dataset: str, score_sha256: str) -> dict:
    """A split file, checked against the dataset name and its score file's hash."""
    try:
        with open(path) as fh:
            record = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"split file {path} is not valid JSON: {err}") from None
    for key in ("dataset", "score_sha256", "train_scenes", "test_scenes"):
        if key not in record:
            raise ValueError(f"split file {path} has no {key!r} entry")
    if record["dataset"] != dataset:
        raise ValueError(f"split file {path} is for dataset {record['dataset']!r}, not {dataset!r}")
    if record["score_sha256"] != score_sha256:
        raise ValueError(
            f"split file {path} was made from a different score file (SHA-256 "
            f"{record['score_sha256'][:12]}..., this one {score_sha256[:12]}...)"
        )
    if set(record["train_scenes"]) & set(record["test_scenes"]):
        raise ValueError(f"split file {path} puts a scene on both sides")
    return record
