"""Scoring images with a trained model: :func:`load_model` / :func:`create_metric` give a
:class:`QualityMetric`, an ``nn.Module`` that takes paths, folders, PIL images, numpy arrays or
tensors and returns quality scores in [0, 1] (higher is better), applying the preprocessing the
model was trained with (docs/maths.md §7: the shorter side resized to the run's image size, the
centre crop).

    >>> metric = cprl_fast.create_metric("runs/demo/best.pt")          # doctest: +SKIP
    >>> metric.score(["a.png", "photos/"])                             # doctest: +SKIP
    >>> loss = 1 - metric_as_loss(restored).mean()                      # doctest: +SKIP

As in pyiqa: ``lower_better`` (False: a higher score is better quality), ``score_range``, and
``as_loss=True`` for a differentiable metric to train restoration networks with (tensors only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as F

from cprl_fast.data.base import read_image
from cprl_fast.data.transforms import test_transform

#: Image file suffixes a folder is searched for (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files and the image files under folders (recursive), folders in sorted order; a path
    that does not exist is an error naming it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and f.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


@dataclass
class Failure:
    """An input that could not be scored, and why."""

    path: str
    error: str


class QualityMetric(nn.Module):
    """A quality model as a metric. ``forward(x [N, 3, H, W] in [0, 1]) -> scores [N]``: the
    tensor is resized and centre-cropped to ``image_size`` (differentiably, with torch ops)
    and scored; :meth:`score` takes any inputs and batches them.

    Args:
        model: images ``[N, 3, S, S]`` in [0, 1] -> scores ``[N]``.
        image_size: the side ``S`` the model was trained at.
        as_loss: keep gradients (for training with the metric as a loss); else no autograd.
    """

    lower_better = False
    score_range = (0.0, 1.0)

    def __init__(self, model: nn.Module, image_size: int, device: str | torch.device = "cpu",
                 batch_size: int = 16, as_loss: bool = False, name: str = "model"):  # fmt: skip
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.as_loss = as_loss
        self.name = name
        if as_loss:  # the model's weights stay fixed; gradients go to the images
            for p in self.model.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> QualityMetric:
        """The wrapped model stays in eval mode (BatchNorm's running statistics, no dropout)."""
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ``[N, 3, S, S]``: shorter side to S, centre crop."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(x.shape)}")
        if min(x.shape[-2:]) != self.image_size:
            x = F.resize(x, [self.image_size], antialias=True)
        return F.center_crop(x, [self.image_size, self.image_size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x.to(self.device, torch.float32))
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            return self.model(x).float()

    # -- any inputs ---------------------------------------------------------------------------
    def _pil_batch(self, images: list[Image.Image]) -> torch.Tensor:
        t = test_transform(self.image_size)
        return torch.stack([t(img) for img in images])

    def _items(self, inputs) -> Iterator[tuple[str, object]]:
        """(name, PIL image or tensor [3, H, W]) per input; paths are read lazily."""
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
            inputs = [inputs]
        for k, item in enumerate(inputs):
            if isinstance(item, (str, Path)):
                for f in image_files([item]):
                    yield str(f), f
            elif isinstance(item, Image.Image):
                yield f"image {k}", item.convert("RGB")
            elif isinstance(item, np.ndarray):
                yield f"array {k}", _from_numpy(item, k)
            elif isinstance(item, torch.Tensor):
                batch = item if item.dim() == 4 else item[None]
                for j, x in enumerate(batch):
                    yield f"tensor {k}:{j}" if item.dim() == 4 else f"tensor {k}", x
            else:
                raise TypeError(f"input {k}: expected a path, PIL image, numpy array or "
                                f"tensor, got {type(item).__name__}")  # fmt: skip

    def score(self, inputs, progress: bool = False) -> tuple[list[tuple[str, float]],
                                                              list[Failure]]:  # fmt: skip
        """Scores every input (a path, folder, list of them, PIL images, numpy ``[H, W, 3]``
        uint8 or float in [0, 1], tensors ``[3, H, W]`` / ``[N, 3, H, W]`` in [0, 1]), in order,
        in batches of ``batch_size``. Returns ``([(name, score)], [Failure])``: a file that
        cannot be read is listed with its error, never skipped silently."""
        from tqdm import tqdm

        done: list[tuple[str, float]] = []
        failed: list[Failure] = []
        names: list[str] = []
        batch: list[torch.Tensor] = []

        def flush():
            if batch:
                with torch.no_grad():
                    scores = self.forward(torch.stack(batch)).cpu().tolist()
                done.extend(zip(names, scores, strict=True))
                names.clear()
                batch.clear()

        bar = tqdm(desc="scoring", unit="img", disable=not progress)
        for name, item in self._items(inputs):
            try:
                if isinstance(item, Path):
                    item = read_image(item)
                x = self._pil_batch([item])[0] if isinstance(item, Image.Image) else \
                    self.preprocess(_checked(item, name)[None])[0]  # fmt: skip
            except (OSError, ValueError) as err:
                failed.append(Failure(name, str(err).splitlines()[0]))
                bar.update(1)
                continue
            names.append(name)
            batch.append(x)
            if len(batch) == self.batch_size:
                flush()
            bar.update(1)
        flush()
        bar.close()
        return done, failed


def _checked(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 3 or x.shape[0] != 3 or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [3, H, W], got {x.dtype} "
                         f"{list(x.shape)}")  # fmt: skip
    if x.numel() and (x.min() < 0 or x.max() > 1 or not torch.isfinite(x).all()):
        raise ValueError(f"{name}: values must be finite and in [0, 1]")
    return x.float()


def _from_numpy(a: np.ndarray, k: int) -> torch.Tensor:
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"array {k}: expected [H, W, 3], got shape {list(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    return x.float() / 255.0 if a.dtype == np.uint8 else x.float()


def load_model(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16,
               as_loss: bool = False) -> QualityMetric:  # fmt: skip
    """The model of a checkpoint written by ``cprl-fast train`` (``best.pt``, ``last.pt``) as a
    :class:`QualityMetric`, with the image size it was trained at. No pretrained weights are
    distributed: ``path`` is a file."""
    from cprl_fast.run import load_trained

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (no pretrained weights are distributed: train one "
            "with cprl-fast train and pass its best.pt)"
        )
    trained = load_trained(path, device)
    return QualityMetric(trained.model, trained.config.image_size, device, batch_size,
                         as_loss, trained.name)  # fmt: skip


def create_metric(path: str | Path, device: str | torch.device = "cpu", as_loss: bool = False,
                  batch_size: int = 16) -> QualityMetric:  # fmt: skip
    """pyiqa's name for :func:`load_model`: ``metric = create_metric(path); metric(images)``."""
    return load_model(path, device, batch_size, as_loss)
