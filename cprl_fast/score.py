"""Scoring images with a trained model: :func:`load_model` / :func:`create_metric` give a
:class:`QualityMetric`, an ``nn.Module`` that takes paths, folders, PIL images, numpy arrays or
tensors and returns quality scores in [0, 1] (higher is better), applying the preprocessing the
model was trained with (docs/maths.md §7: the shorter side resized to the run's image size, the
centre crop).

    >>> metric = cprl_fast.create_metric("reports/demo/models/cprl/best.pt")  # doctest: +SKIP
    >>> metric("photo.png")                      # tensor([0.61]), as pyiqa  # doctest: +SKIP
    >>> metric.score(["a.png", "photos/"])       # ([(name, score)], [Failure])  # doctest: +SKIP
    >>> loss = 1 - metric_as_loss(restored).mean()                      # doctest: +SKIP

As in pyiqa: calling the metric on any input returns a tensor of scores, ``lower_better``
(False: a higher score is better quality), ``score_range``, and ``as_loss=True`` for a
differentiable metric to train restoration networks with (tensors only).

Files are decoded by :func:`cprl_fast.images.read_image` (every Pillow mode as a viewer shows
it, EXIF orientation applied, a per-image pixel limit). A score that is not finite is a failure,
never a score.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms.v2 import functional as F

from cprl_fast.checks import check_count, check_images
from cprl_fast.data.transforms import test_transform
from cprl_fast.images import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    check_resized_pixels,
    folder_images,
    read_image,
    to_rgb,
)
from cprl_fast.io import printable


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files and the image files under folders (:func:`~cprl_fast.images.folder_images`:
    recursive, by suffix, sorted); a path that does not exist, or is a device or FIFO, is an
    error naming it. Inside a folder such an entry (or a broken link) with an image's suffix is
    listed, so that scoring reports it as a failure rather than leaving it out unsaid."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += folder_images(p)
        elif p.is_file():
            out.append(p)
        elif p.exists():  # a device, FIFO or socket: never opened (it could block or not end)
            raise ValueError(f"not a regular file or folder: {printable(str(p))}")
        else:
            why = " (a symbolic link that points nowhere or to itself)" if p.is_symlink() else ""
            raise FileNotFoundError(f"no such file or folder: {printable(str(p))}{why}")
    return out


@dataclass
class Failure:
    """An input that could not be scored, and why."""

    path: str
    error: str


class ScoringError(ValueError):
    """Calling a metric on inputs of which at least one could not be scored."""


class QualityMetric(nn.Module):
    """A quality model as a metric, called as pyiqa's metrics are: ``metric(x)`` returns the
    scores ``[N]`` (float32, in [0, 1], higher is better) of ``x``: a tensor ``[N, 3, H, W]``
    or ``[3, H, W]`` (float, in [0, 1]; resized and centre-cropped to ``image_size``
    differentiably), a path, a folder, a PIL image, a numpy ``[H, W, 3]`` array or a list of
    them. An input that cannot be scored raises :class:`ScoringError` naming it;
    :meth:`score` returns the failures beside the scores instead.

    Args:
        model: images ``[N, 3, S, S]`` in [0, 1] -> scores ``[N]``.
        image_size: the side ``S`` the model was trained at.
        as_loss: keep gradients (for training with the metric as a loss); else no autograd.
        max_pixels: files with more pixels than this are failures (:mod:`cprl_fast.images`).
        workers: threads that decode and resize the inputs of :meth:`score` while the model
            scores (Pillow decodes without holding the GIL); default :func:`default_workers`.
            1: the calling thread alone. The scores are the same for any number.
    """

    lower_better = False
    score_range = (0.0, 1.0)

    def __init__(self, model: nn.Module, image_size: int, device: str | torch.device = "cpu",
                 batch_size: int = 16, as_loss: bool = False, name: str = "model",
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 workers: int | None = None):  # fmt: skip
        super().__init__()
        check_count(batch_size, "batch_size")
        self.workers = check_count(default_workers() if workers is None else workers, "workers")
        self.model = model.to(device).eval()
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.as_loss = as_loss
        self.name = name
        self.max_pixels = check_max_pixels(max_pixels)
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
            check_resized_pixels(x.shape[-1], x.shape[-2], self.image_size, self.max_pixels,
                                 "tensor")  # fmt: skip
            x = F.resize(x, [self.image_size], antialias=True)
        return F.center_crop(x, [self.image_size, self.image_size])

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of checked images ``[N, 3, H, W]`` (no check of the output)."""
        x = self.preprocess(x.to(self.device, torch.float32))
        with torch.set_grad_enabled(self.as_loss and torch.is_grad_enabled()):
            return self.model(x).float().reshape(-1)

    def forward(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            done, failed = self.score(x)
            if failed:
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                raise ScoringError(f"cannot score {failed[0].path}: {failed[0].error}{more}")
            return torch.tensor([s for _, s in done], dtype=torch.float32)
        x = check_images(x)
        if x.shape[0] == 0:
            return torch.zeros(0, device=self.device)
        scores = self._predict(x)
        bad = (~torch.isfinite(scores.detach())).nonzero().flatten().tolist()
        if bad:
            raise ScoringError(f"the model returned a non-finite score for image {bad[0]} of "
                               f"{x.shape[0]}")  # fmt: skip
        return scores

    # -- any inputs ---------------------------------------------------------------------------
    def _pil_batch(self, images: list[Image.Image]) -> torch.Tensor:
        t = test_transform(self.image_size, self.max_pixels)
        return torch.stack([t(img) for img in images])

    def _items(self, inputs) -> Iterator[tuple[str, object]]:
        """(name, PIL image or tensor [3, H, W]) per input; paths are read lazily."""
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray, torch.Tensor)):
            inputs = [inputs]
        for k, item in enumerate(inputs):
            if isinstance(item, (str, Path)):
                # a folder's image files; any other path is read as it is (read_image refuses
                # one that is missing or not a regular file: a failure, never opened)
                for f in image_files([item]) if Path(item).is_dir() else [Path(item)]:
                    yield str(f), f
            elif isinstance(item, Image.Image):
                yield f"image {k}", item
            elif isinstance(item, np.ndarray):
                yield f"array {k}", item
            elif isinstance(item, torch.Tensor):
                batch = item if item.dim() == 4 else item[None]
                for j, x in enumerate(batch):
                    yield f"tensor {k}:{j}" if item.dim() == 4 else f"tensor {k}", x
            else:
                raise TypeError(f"input {k}: expected a path, PIL image, numpy array or "
                                f"tensor, got {type(item).__name__}")  # fmt: skip

    def _decoded(self, items: Iterable[tuple[str, object]]
                 ) -> Iterator[tuple[str, torch.Tensor | OSError | ValueError]]:  # fmt: skip
        """``(name, [3, S, S] tensor, or the OSError or ValueError saying why not)`` per item,
        in order, decoded by :attr:`workers` threads at most ``batch_size + 2 x workers`` items
        ahead: the threads go on decoding the next batch while the model scores this one, and
        at most ``workers`` full-size images are being decoded at once (what waits is at the
        model's size)."""

        def decode(item: object, name: str) -> torch.Tensor | OSError | ValueError:
            try:
                return self._tensor(item, name)
            except (OSError, ValueError) as err:
                return err

        if self.workers == 1:
            for name, item in items:
                yield name, decode(item, name)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="cprl-fast-decode") as pool:
            ahead: deque = deque()
            for name, item in items:
                ahead.append((name, pool.submit(decode, item, name)))
                if len(ahead) > self.batch_size + 2 * self.workers:
                    name, done = ahead.popleft()
                    yield name, done.result()
            while ahead:
                name, done = ahead.popleft()
                yield name, done.result()

    def _tensor(self, item: object, name: str) -> torch.Tensor:
        """One input -> ``[3, S, S]``; OSError or ValueError says why it cannot be scored."""
        if isinstance(item, Path):
            item = read_image(item, self.max_pixels)
        elif isinstance(item, Image.Image):
            item = to_rgb(item)
        elif isinstance(item, np.ndarray):
            item = _from_numpy(item, name)
        if isinstance(item, Image.Image):
            return self._pil_batch([item])[0]
        try:
            return self.preprocess(check_images(item, name))[0]
        except TypeError as err:
            raise ValueError(str(err)) from None

    def score(self, inputs, progress: bool = False) -> tuple[list[tuple[str, float]],
                                                              list[Failure]]:  # fmt: skip
        """Scores every input (a path, folder, list of them, PIL images, numpy ``[H, W, 3]``
        uint8 or float in [0, 1], tensors ``[3, H, W]`` / ``[N, 3, H, W]`` in [0, 1]), in order,
        in batches of ``batch_size``. Returns ``([(name, score)], [Failure])``: an input that
        cannot be read, is over the pixel limit, or gets a non-finite score is listed with its
        error, never skipped silently and never given a score. ``progress``: a bar on stderr
        (with the total, the inputs being listed first, unless they come as an iterator)."""
        from tqdm import tqdm

        done: list[tuple[str, float]] = []
        failed: list[Failure] = []
        names: list[str] = []
        batch: list[torch.Tensor] = []

        def flush():
            if batch:
                with torch.no_grad():
                    scores = self._predict(torch.stack(batch)).cpu().tolist()
                for name, s in zip(names, scores, strict=True):
                    if math.isfinite(s):
                        done.append((name, s))
                    else:
                        failed.append(Failure(name, f"the model returned a non-finite score "
                                                    f"({s})"))  # fmt: skip
                names.clear()
                batch.clear()

        items: Iterable[tuple[str, object]] = self._items(inputs)
        if progress and not isinstance(inputs, Iterator):  # listed first, for the bar's total
            items = list(items)
        total = len(items) if isinstance(items, list) else None
        bar = tqdm(desc="scoring", unit="img", total=total, disable=not progress)
        for name, x in self._decoded(items):
            if not isinstance(x, torch.Tensor):
                # all of it, escaped: a name with a newline in the message must not cut it short
                failed.append(Failure(name, printable(str(x))))
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


def default_workers() -> int:
    """The decoding threads a :class:`QualityMetric` uses by default: the CPU cores this process
    may run on (:func:`cprl_fast.threads.available_cores`), at most 4."""
    from cprl_fast.threads import available_cores

    return min(4, available_cores())


def _from_numpy(a: np.ndarray, name: str) -> torch.Tensor:
    """``[H, W, 3]`` uint8 (0-255) or float in [0, 1] -> float tensor ``[3, H, W]``."""
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name}: expected shape [H, W, 3], got {list(a.shape)}")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 (0-255) or float values in [0, 1], got "
                         f"{a.dtype}")  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)


def load_model(path: str | Path, device: str | torch.device = "cpu", batch_size: int = 16,
               as_loss: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
               workers: int | None = None) -> QualityMetric:  # fmt: skip
    """The model of a checkpoint written by ``cprl-fast train`` (``best.pt``, ``last.pt``) or
    ``cprl-fast export`` (``.safetensors``) as a :class:`QualityMetric`, with the image size it
    was trained at (``workers``: its decoding threads). No pretrained weights are distributed:
    ``path`` is a file (a folder is an error listing the checkpoints in it)."""
    from cprl_fast.train.runs import load_trained

    trained = load_trained(path, device)
    return QualityMetric(trained.model, trained.config.image_size, device, batch_size,
                         as_loss, trained.name, max_pixels, workers)  # fmt: skip


def create_metric(path: str | Path, device: str | torch.device = "cpu", as_loss: bool = False,
                  batch_size: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS,
                  workers: int | None = None) -> QualityMetric:  # fmt: skip
    """pyiqa's name for :func:`load_model`: ``metric = create_metric(path); metric(images)``."""
    return load_model(path, device, batch_size, as_loss, max_pixels, workers)
