"""What a quality ResNet does to its input before the backbone, and how it scores an image
larger than the crops it was trained on.

- ``input_norm`` (:data:`INPUT_NORMS`): ``"imagenet"`` subtracts ImageNet's channel means and
  divides by its standard deviations (what torchvision's weights expect); ``"lcn"`` first applies
  the local contrast normalisation of Kang et al. (CVPR 2014), :class:`LocalContrastNorm`, so
  that what reaches the network is local structure (noise, blur, blocking, ringing) with the
  scene's brightness and contrast divided out. On the built-in data it lifted the held-out SRCC
  of a ResNet-18 trained from scratch (``results/learning-builtin-v2``).
- ``patch``: the model's score of an image is the mean of its scores of ``patch x patch`` tiles
  covering the image (:func:`tiles`), as Kang et al. and DIQaM-NR score images; a model trained
  on ``patch``-px crops at native resolution (``TrainConfig.train_crop``) then sees at test what
  it saw in training. ``None``: the whole image at once.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: The input normalisations of the quality ResNets.
INPUT_NORMS = ("imagenet", "lcn")


def check_input_norm(value: object) -> None:
    """ValueError naming the option unless ``value`` is one of :data:`INPUT_NORMS`."""
    if not isinstance(value, str) or value not in INPUT_NORMS:
        raise ValueError(f"model option input_norm must be one of {', '.join(INPUT_NORMS)}, "
                         f"got {value!r}")  # fmt: skip


class LocalContrastNorm(nn.Module):
    """``(x - local mean) / (local std + c)`` per channel over a ``k x k`` window (zero padding
    left out of the statistics). Input and output ``[N, C, H, W]``, any float dtype; no
    parameters."""

    def __init__(self, k: int = 7, c: float = 0.02):
        super().__init__()
        self.k, self.c = k, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.avg_pool2d(x, self.k, 1, self.k // 2, count_include_pad=False)
        square = F.avg_pool2d(x * x, self.k, 1, self.k // 2, count_include_pad=False)
        var = square - mean * mean
        # sqrt of the variance where it is > 0, else 0: the forward of clamp(min=0).sqrt(), but
        # a flat window (variance exactly 0) gets gradient 0, not inf * 0 = NaN, so attacks and
        # input-gradient penalties (NT) stay finite on flat or saturated regions
        positive = var > 0
        std = torch.where(positive, torch.where(positive, var, 1.0).sqrt(), 0.0)
        return (x - mean) / (std + self.c)

    def extra_repr(self) -> str:
        return f"k={self.k}, c={self.c}"


def tile_starts(length: int, size: int) -> list[int]:
    """Starts of the fewest ``size``-long windows that cover ``0..length``, evenly spaced
    (they overlap where ``size`` does not divide ``length``); ``[0]`` when ``length <= size``."""
    count = math.ceil(length / size)
    if count <= 1:
        return [0]
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images ``[N, C, H, W]`` -> their tiles ``[N * T, C, h, w]`` (``h = min(size, H)``,
    ``w = min(size, W)``; image ``n``'s ``T`` tiles are rows ``n * T .. n * T + T - 1``)."""
    h, w = min(size, x.shape[-2]), min(size, x.shape[-1])
    rows, cols = tile_starts(x.shape[-2], h), tile_starts(x.shape[-1], w)
    out = torch.stack([x[..., i : i + h, j : j + w] for i in rows for j in cols], dim=1)
    return out.flatten(0, 1)
