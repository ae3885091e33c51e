"""Preprocessing of docs/maths.md §7: resize the shorter side to ``size``, then a random
``size x size`` crop for training or the centre crop for testing; images become float32
``[3, H, W]`` tensors in ``[0, 1]`` (ImageNet normalisation happens inside the models).
Training may instead take a random ``crop x crop`` crop of the resized image (native-resolution
crops, scored by tiles at test: :mod:`cprl_fast.models.inputs`), optionally flipped."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def to_tensor(img) -> torch.Tensor:
    """PIL image -> float32 tensor [3, H, W] in [0, 1]."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(img)


def _resize_crop(size: int, *crop) -> v2.Compose:
    """Shorter side to ``size``, then the ``crop`` transforms, as float32 in [0, 1]."""
    return v2.Compose(
        [v2.ToImage(), v2.Resize(size, antialias=True), *crop,
         v2.ToDtype(torch.float32, scale=True)]
    )  # fmt: skip


def train_transform(size: int = 320, crop: int | None = None, hflip: bool = False) -> v2.Compose:
    """Shorter side to ``size``, a random ``crop``-px square crop (``None``: ``size``), and a
    horizontal flip with probability 1/2 where ``hflip``."""
    flip = [v2.RandomHorizontalFlip()] if hflip else []
    return _resize_crop(size, v2.RandomCrop(crop or size), *flip)


def test_transform(size: int = 320) -> v2.Compose:
    return _resize_crop(size, v2.CenterCrop(size))
