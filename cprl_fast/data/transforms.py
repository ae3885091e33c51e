"""Preprocessing of docs/maths.md §7: resize the shorter side to ``size``, then a random
``size x size`` crop for training or the centre crop for testing; images become float32
``[3, H, W]`` tensors in ``[0, 1]`` (ImageNet normalisation happens inside the models).
Training may instead take a random ``crop x crop`` crop of the resized image (native-resolution
crops, scored by tiles at test: :mod:`cprl_fast.models.inputs`), optionally flipped. An image
so thin that the resize would make it larger than the pixel limit is refused
(:func:`cprl_fast.images.check_resized_pixels`)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from cprl_fast.images import DEFAULT_MAX_PIXELS, check_resized_pixels


def to_tensor(img) -> torch.Tensor:
    """PIL image -> float32 tensor [3, H, W] in [0, 1]."""
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(img)


class _ResizeBound:
    """Refuses (:class:`~cprl_fast.images.ImageTooLarge`) an image that resizing its shorter
    side to ``size`` would make larger than ``max_pixels``; passes the image on unchanged."""

    def __init__(self, size: int, max_pixels: int):
        self.size, self.max_pixels = size, max_pixels

    def __call__(self, img):
        height, width = v2.functional.get_size(img)
        check_resized_pixels(width, height, self.size, self.max_pixels)
        return img


def _resize_crop(size: int, *crop, max_pixels: int = DEFAULT_MAX_PIXELS) -> v2.Compose:
    """Shorter side to ``size`` (at most ``max_pixels`` pixels after it), then the ``crop``
    transforms, as float32 in [0, 1]."""
    return v2.Compose(
        [v2.ToImage(), _ResizeBound(size, max_pixels), v2.Resize(size, antialias=True), *crop,
         v2.ToDtype(torch.float32, scale=True)]
    )  # fmt: skip


def train_transform(size: int = 320, crop: int | None = None, hflip: bool = False) -> v2.Compose:
    """Shorter side to ``size``, a random ``crop``-px square crop (``None``: ``size``), and a
    horizontal flip with probability 1/2 where ``hflip``."""
    flip = [v2.RandomHorizontalFlip()] if hflip else []
    return _resize_crop(size, v2.RandomCrop(crop or size), *flip)


def test_transform(size: int = 320, max_pixels: int = DEFAULT_MAX_PIXELS) -> v2.Compose:
    """Shorter side to ``size`` (an image that this makes larger than ``max_pixels`` is
    refused), then the centre ``size x size`` crop."""
    return _resize_crop(size, v2.CenterCrop(size), max_pixels=max_pixels)
