"""Quality-aware pretraining that needs no download: ranking distortion strengths.

RankIQA's idea (Liu, van de Weijer and Bagdanov, ICCV 2017), on this project's own
distortions: a crop of a pristine photograph and four versions of it distorted by one type at
four random strengths between the type's levels 1 and 5 (:data:`cprl_fast.data.distortions.
LEVELS_V2`) are ordered by strength, and a hinge asks the quality model's score to fall along
that order, for every pair of one crop's five versions. No score of any image is used, only
which of two versions of the same content is more distorted. Each step draws new crops,
types and strengths, so the pairs are unlimited.

The result is a backbone weights file that every ResNet model accepts as ``pretrained``
(``cprl-fast train --pretrained FILE``): the plain ResNet, CA and CPRL (the CA modules start
as they would from ImageNet weights), SAT. The same procedure in
``results/learning-builtin-v2/ablate.py`` (round 5 there: 300 steps on the 12 training
scenes' references of each of builtin-v2's five scene-disjoint folds) gave a model that,
before it saw any label, ranked the held-out scenes' images with SRCC 0.49-0.70.

The same hinge can also stay beside the supervised loss in every training step
(``TrainConfig.rank_weight``, ``cprl-fast train --rank-weight W``; :func:`with_ranking_hinge`).
There, round 5 measured 0.688 [0.442, 0.933] held-out SRCC over the five folds after the
pretraining, against 0.661 [0.426, 0.895] for the supervised steps alone (paired +0.027
[-0.032, +0.086]: within noise).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import logging
import math
import operator
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cprl_fast.checks import check_count, check_seed
from cprl_fast.data.distortions import DISTORTIONS, LEVELS_V2, distort_by
from cprl_fast.devices import pins, to_device
from cprl_fast.images import DEFAULT_MAX_PIXELS, read_image
from cprl_fast.io import atomic_write, open_own_file
from cprl_fast.train.logs import LOG_EVERY, draw_curves
from cprl_fast.train.objectives import Groups, Objective

log = logging.getLogger(__name__)

#: versions per crop: the clean crop and four distorted ones
VERSIONS = 5
#: What :func:`pretrain_by_ranking` writes into its ``log_dir``.
LOG_FILES = ("log.csv", "curves.png")


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """Settings of :func:`pretrain_by_ranking`.

    Attributes:
        arch: the torchvision ResNet, one of :data:`~cprl_fast.models.ARCHS`.
        input_norm: what the backbone reads (:mod:`cprl_fast.models.inputs`); train with the
            same value (``lcn`` for ``--recipe native``).
        steps: optimiser steps. crops: reference crops per step (each gives 5 images).
        crop: crop side, px (the recipe's ``train_crop``). kinds: the distortion types drawn
            (any of :data:`~cprl_fast.data.distortions.DISTORTIONS`; default builtin-v2's ten).
        lr: peak of the one-cycle learning rate (AdamW, weight decay ``weight_decay``).
        margin: the hinge's margin on score differences (scores are in [0, 1]).
        seed: drives crops, types, strengths, noise and the initial weights.
    """

    arch: str = "resnet18"
    input_norm: str = "lcn"
    steps: int = 300
    crops: int = 8
    crop: int = 64
    kinds: tuple[str, ...] = tuple(sorted(LEVELS_V2))
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.05
    seed: int = 0

    def __post_init__(self):
        from cprl_fast.models import ARCHS  # checked before any reference is read

        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name in ("steps", "crops"):
            check_count(getattr(self, name), name)
        check_seed(self.seed)
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 16:
            raise ValueError(f"crop must be an integer side >= 16 px, got {self.crop!r}")
        unknown = [k for k in self.kinds if k not in DISTORTIONS]
        if unknown or not self.kinds:
            raise ValueError(f"kinds must name types of {', '.join(DISTORTIONS)}, "
                             f"got {', '.join(unknown) or 'none'}")  # fmt: skip
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (self.margin >= 0 and np.isfinite(self.margin)):
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")

    @property
    def border(self) -> int:
        """Pixels around each crop that are distorted too and then dropped, so that no
        distortion (a blur, a shift) sees the crop's edge."""
        return self.crop // 4


@dataclasses.dataclass(frozen=True)
class RankingResult:
    """What :func:`pretrain_by_ranking` wrote and how the run ended."""

    path: Path  #: the weights file (``pretrained`` of every ResNet model)
    config: RankingConfig
    final_hinge: float  #: the last step's hinge
    seconds: float  #: wall time of the run
    #: every step's hinge, in order (the first ones about the margin or above: an untrained
    #: model's scores follow no order)
    hinges: tuple[float, ...] = ()
    curves: Path | None = None  #: the hinge's figure (``log_dir``'s curves.png), where drawn

    def mean_hinge(self, steps: int, last: bool = False) -> float:
        """The mean hinge of the first (``last``: the last) ``steps`` steps."""
        part = self.hinges[-steps:] if last else self.hinges[:steps]
        return sum(part) / len(part)


def ranking_batch(refs: Sequence[Image.Image], cfg: RankingConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One batch: ``cfg.crops`` random crops of ``refs`` (RGB images at least ``crop + 2 *
    border`` px on each side), each as the clean crop and 4 versions distorted by one random
    type of ``cfg.kinds`` at strengths drawn uniformly between its levels 1 and 5.

    Returns images ``[crops * 5, 3, crop, crop]`` float32 in [0, 1] (a crop's versions
    consecutive, the clean one first; half the batches mirrored) and their strengths
    ``[crops, 5]`` (-1 for the clean crop, 0 for level 1 up to 4 for level 5; ascending).
    """
    c, pad = cfg.crop, cfg.border
    side = c + 2 * pad
    images, strengths = [], []
    for _ in range(cfg.crops):
        ref = refs[rng.integers(len(refs))]
        u = int(rng.integers(0, ref.size[0] - side + 1))
        v = int(rng.integers(0, ref.size[1] - side + 1))
        big = ref.crop((u, v, u + side, v + side))
        kind = cfg.kinds[rng.integers(len(cfg.kinds))]
        levels = DISTORTIONS[kind]
        ts = np.sort(rng.uniform(0, len(levels) - 1, size=VERSIONS - 1))
        versions = [big] + [distort_by(big, kind, float(np.interp(t, range(len(levels)), levels)),
                                       seed=int(rng.integers(2**31))) for t in ts]  # fmt: skip
        for img in versions:
            a = np.asarray(img)[pad : pad + c, pad : pad + c]
            images.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
        strengths.append(np.concatenate([[-1.0], ts]))
    x = torch.stack(images).float() / 255
    if rng.random() < 0.5:
        x = x.flip(-1)
    return x, torch.tensor(np.stack(strengths), dtype=torch.float32)


def ranking_hinge(scores: torch.Tensor, strengths: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``relu(margin - (s_i - s_j))`` over every pair ``(i, j)`` of one crop's versions
    where ``i`` is less distorted than ``j``. ``scores``, ``strengths``: ``[crops, 5]``."""
    d = scores[:, :, None] - scores[:, None, :]
    weaker = strengths[:, :, None] < strengths[:, None, :]
    return F.relu(margin - d[weaker]).mean()


class References(Sequence[Image.Image]):
    """The pristine photographs crops are drawn from, as RGB images, each read and checked once
    when made (readable, at least ``min_side`` px on each side). The first are kept decoded
    while their pixels stay within ``max_bytes`` (default: the budget of
    :data:`cprl_fast.data.decoded.MAX_BYTES`, 2 GiB or an eighth of the machine's memory); the
    rest are decoded again at each use: the same pixels, so the same batches, more slowly, and
    never more memory however many photographs there are (300 photographs of 12 megapixels
    would take 10.8 GB decoded). ``kept`` counts those kept."""

    def __init__(self, files: Sequence[Path], min_side: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None,
                 progress: bool = False):  # fmt: skip
        from tqdm.auto import tqdm

        from cprl_fast.data.decoded import MAX_BYTES

        self.files, self.max_pixels = list(files), max_pixels
        budget = MAX_BYTES if max_bytes is None else max_bytes
        self._kept: dict[int, Image.Image] = {}
        self.nbytes = 0  #: bytes of the images kept
        for k, f in enumerate(tqdm(self.files, desc="reading the references", unit="img",
                                   disable=not progress, leave=False)):  # fmt: skip
            img = read_image(f, max_pixels)
            if min(img.size) < min_side:
                raise ValueError(f"reference {f} is {img.size[0]} x {img.size[1]} px: ranking "
                                 f"crops need at least {min_side} px on each side")  # fmt: skip
            size = img.size[0] * img.size[1] * 3
            if self.nbytes + size <= budget:
                self._kept[k] = img
                self.nbytes += size
        self.kept = len(self._kept)
        if self.kept < len(self.files):
            log.warning("%d of %d reference photographs kept decoded (%.1f GB, the budget); the "
                        "others are decoded at each use, more slowly: fewer or smaller "
                        "photographs would train faster", self.kept, len(self.files),
                        self.nbytes / 1e9)  # fmt: skip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k):  # an int (a slice gives the images as a list)
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[operator.index(k)]  # negative from the end; IndexError past it
        kept = self._kept.get(k)
        return kept if kept is not None else read_image(self.files[k], self.max_pixels)


def load_references(references: str | Path | Iterable[str | Path], min_side: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None,
                    progress: bool = False) -> References:  # fmt: skip
    """The :class:`References` of ``references`` (a folder, searched recursively, or files),
    each checked to be at least ``min_side`` px on both sides (``progress``: a bar over the
    reading)."""
    from cprl_fast.data.synthetic import reference_files

    return References(reference_files(references), min_side, max_pixels, max_bytes, progress)


@dataclasses.dataclass(frozen=True)
class PretrainingSource:
    """Where the references of a pretraining came from, when they are a dataset's own (the
    ``refs/`` of one split's scenes, ``cprl-fast pretrain --dataset``): recorded in the weights
    file so that a training on that dataset can refuse weights that saw its held-out scenes
    (:func:`check_pretraining_scenes`)."""

    dataset: str
    score_sha256: str  #: of the dataset's score file: which version of it
    scenes: tuple[str, ...]


def pretraining_source(path: str | Path) -> dict | None:
    """The ``source`` record of a weights file of :func:`pretrain_by_ranking` (None for any
    other file, or one pretrained on photographs from a folder)."""
    from cprl_fast.train.checkpoint import read_tensors

    state = read_tensors(Path(path), "pretrained weights file")
    meta = state.get("meta") if isinstance(state, dict) else None
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, dict) else None


def check_pretraining_scenes(pretrained: str | Path, train_set, val_set=None) -> None:
    """Raises ``ValueError`` where the weights file ``pretrained`` was pretrained on reference
    photographs of scenes of ``train_set``'s dataset (the same score file, or a dataset of the
    same registered ``photographs``) that are neither on its training side nor on
    ``val_set``'s: its test scenes, whose content the model would have seen before it is tested
    on them. (``cprl-fast pretrain --dataset`` takes every scene but the test side's, as
    ``--recipe native`` trains: a run that holds validation scenes out pretrained on those.)"""
    from cprl_fast.data.base import same_photographs

    source = pretraining_source(pretrained)
    if source is None:
        return
    info = getattr(train_set, "split_info", {}) or {}
    name, made_from = getattr(train_set, "name", None), source.get("dataset")
    same = made_from == name and source.get("score_sha256") == info.get("score_sha256")
    if not (same or same_photographs(made_from, name)):
        return
    known = {it.scene for it in train_set.items}
    known |= {it.scene for it in getattr(val_set, "items", ())}
    seen = sorted(set(map(str, source.get("scenes") or ())) - known)
    if seen:
        raise ValueError(
            f"pretrained weights {pretrained} were pretrained on the reference photographs of "
            f"{len(seen)} scene(s) this run tests on (e.g. {seen[0]!r}): the model would have "
            "seen the content it is tested on; pretrain with the same --dataset, --folds, "
            "--fold and --split-seed as this run"
        )


def pretrain_by_ranking(references: str | Path | Iterable[str | Path], out: str | Path,
                        cfg: RankingConfig = RankingConfig(), progress: bool = True,
                        max_pixels: int = DEFAULT_MAX_PIXELS,
                        device: str | torch.device = "cpu",
                        log_dir: str | Path | None = None,
                        source: PretrainingSource | None = None) -> RankingResult:  # fmt: skip
    """Trains the plain quality ResNet of ``cfg.arch`` from random weights to rank distortion
    strengths of crops of ``references`` (pristine photographs: a folder or files), then writes
    its backbone's weights to ``out`` (replaced if it exists; written atomically; CPU tensors
    whatever ``device`` trained them). ``device``: where the model trains (``cpu``, ``cuda``,
    ``cuda:N``); the batches are drawn on the CPU, from the same generator on any device.

    ``log_dir`` (created if needed) receives ``log.csv`` (``step``, ``rank_hinge``: every
    step's hinge; a log there is replaced) and, at the end, ``curves.png`` (the hinge against
    the step, :func:`cprl_fast.train.logs.draw_curves`; not drawn, with a warning, without
    matplotlib). The hinges are read to the host every :data:`~cprl_fast.train.logs.LOG_EVERY`
    steps, in one transfer; a non-finite one stops the run with ``FloatingPointError`` before
    ``out`` is written."""
    from tqdm.auto import tqdm

    from cprl_fast.checks import check_device
    from cprl_fast.models.registry import build

    dev = check_device(device)
    refs = load_references(references, cfg.crop + 2 * cfg.border, max_pixels, progress=progress)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build("resnet", arch=cfg.arch, input_norm=cfg.input_norm).to(dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps,
                                                pct_start=0.1)  # fmt: skip
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        fd = open_own_file(log_dir / LOG_FILES[0], "pretraining log",
                           os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # fmt: skip
    else:
        fd = os.open(os.devnull, os.O_WRONLY)
    start = time.perf_counter()
    hinges: list[float] = []
    pending: list[torch.Tensor] = []
    with os.fdopen(fd, "w", newline="") as fh, \
            tqdm(range(cfg.steps), desc="ranking pretraining", disable=not progress) as bar:
        logger = csv.writer(fh)
        logger.writerow(["step", "rank_hinge"])
        for step in bar:
            x, strengths = ranking_batch(refs, cfg, rng)
            scores = model(to_device(x, dev)).view(cfg.crops, VERSIONS)
            hinge = ranking_hinge(scores, to_device(strengths, dev), cfg.margin)
            opt.zero_grad()
            hinge.backward()
            opt.step()
            sched.step()
            pending.append(hinge.detach())
            if len(pending) == LOG_EVERY or step == cfg.steps - 1:
                for value in torch.stack(pending).float().tolist():
                    hinges.append(value)
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"ranking pretraining stopped at step {len(hinges)}: hinge {value} "
                            f"(a lower learning rate may help); {out} was not written")
                    logger.writerow([len(hinges), f"{value:.6g}"])
                pending = []
                fh.flush()
                bar.set_postfix(hinge=f"{hinges[-1]:.4f}")
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.backbone.state_dict().items()}
    meta = {"pretraining": "ranking", **{k: list(v) if isinstance(v, tuple) else v
                                         for k, v in dataclasses.asdict(cfg).items()}}  # fmt: skip
    if source is not None:
        meta["source"] = {"dataset": source.dataset, "score_sha256": source.score_sha256,
                          "scenes": sorted(source.scenes)}  # fmt: skip
    path = atomic_write(out, lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))
    seconds = time.perf_counter() - start
    curves = None
    if log_dir is not None:
        try:
            curves = draw_curves(log_dir)
        except ImportError as err:
            log.warning("%s not drawn: %s", log_dir / "curves.png", err)
    return RankingResult(path, cfg, hinges[-1], seconds, tuple(hinges), curves)


class RankingBatches(torch.utils.data.Dataset):
    """Item ``t``: step ``t``'s :func:`ranking_batch` of ``refs``, drawn from a generator seeded
    by ``(cfg.seed, t)`` alone, so a resumed run, or a worker process, draws the same batch."""

    def __init__(self, refs: Sequence[Image.Image], cfg: RankingConfig):
        self.refs, self.cfg = refs if isinstance(refs, References) else list(refs), cfg

    def __getitem__(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return ranking_batch(self.refs, self.cfg, np.random.default_rng([self.cfg.seed, t]))


class RankingTerm:
    """The ranking hinge on a new batch of :class:`RankingBatches` at every step: what
    :class:`WithRankingHinge` adds to a supervised loss.

    With ``workers`` 0 each batch is drawn when its step asks for it, on the calling thread.
    With ``workers`` > 0 (the run's ``num_workers``) that many worker processes of a
    ``DataLoader`` draw the next steps' batches while the model trains (two per worker ahead;
    in pinned memory bound for CUDA): the crops are distorted with PIL, NumPy and SciPy, which
    hold the interpreter lock, so a thread would slow the training loop instead. The batches are
    the same either way; a step out of sequence (a resume, a repeated step) restarts the
    workers at that step."""

    def __init__(self, refs: Sequence[Image.Image], cfg: RankingConfig, workers: int = 0):
        self.batches, self.cfg, self.workers = RankingBatches(refs, cfg), cfg, workers
        self._ahead: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._next = -1  # the step the workers deliver next

    @property
    def refs(self) -> Sequence[Image.Image]:
        """The pristine photographs the crops come from."""
        return self.batches.refs

    def batch(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``t``'s images ``[crops * 5, 3, crop, crop]`` and strengths ``[crops, 5]``
        (float32, on the CPU; see :func:`ranking_batch`)."""
        if self.workers == 0:
            return self.batches[t]
        if self._ahead is None or self._next != t:
            self._ahead = iter(torch.utils.data.DataLoader(
                self.batches, batch_size=None, sampler=itertools.count(t),
                num_workers=self.workers, pin_memory=pins(device),
            ))  # fmt: skip
        self._next = t + 1
        return next(self._ahead)

    def close(self) -> None:
        """Stops the worker processes (the next :meth:`batch` starts them again)."""
        self._ahead = None  # the iterator's finaliser shuts its workers down

    def __call__(self, net: torch.nn.Module, t: int, device: torch.device) -> torch.Tensor:
        """The hinge (0-d float32) of ``net``'s scores on step ``t``'s batch, on ``device``."""
        x, strengths = self.batch(t, device)
        scores = net(to_device(x, device)).float().view(self.cfg.crops, VERSIONS)
        return ranking_hinge(scores, to_device(strengths, device), self.cfg.margin)


class WithRankingHinge(Objective):
    """An objective of one loss (``regression``, ``emd``, ``sat``, ``nt``) plus ``weight``
    times the ranking hinge of :class:`RankingTerm`, both in one backward; log.csv gets the
    objective's loss and ``rank_hinge``. The game of ``pns`` (three optimisers) is not one
    loss: :func:`with_ranking_hinge` refuses it."""

    distributed = False  # two forwards before one backward

    def __init__(self, inner: Objective, term: RankingTerm, weight: float):
        super().__init__(inner.options)
        self.inner, self.term, self.weight = inner, term, weight
        self.columns = (*inner.columns, "rank_hinge")

    def param_groups(self, model: nn.Module) -> Groups:
        return self.inner.param_groups(model)

    def losses(
        self, net: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        loss = self.inner.loss(net, model, x, y)
        hinge = self.term(net, t, x.device)
        return loss + self.weight * hinge, {self.inner.columns[0]: loss, "rank_hinge": hinge}

    def close(self) -> None:
        self.inner.close()
        self.term.close()


def with_ranking_hinge(objective: Objective, name: str, weight: float, crop: int,
                       references: str | Path | None, train_items: Iterable,
                       seed: int, workers: int = 0) -> WithRankingHinge:  # fmt: skip
    """``objective`` (registered as ``name``) with the ranking hinge of weight ``weight`` on
    ``crop``-px crops (the run's ``train_crop``) of ``references``: a folder or file of
    pristine photographs, or, when None, the pristine references of the training split's
    scenes (``train_items``; a dataset written by ``cprl-fast synthesize``). The default keeps
    the test scenes' photographs out of training; a folder given should too. ``workers``:
    processes that draw the ranking batches ahead (:class:`RankingTerm`)."""
    from cprl_fast.data.synthetic import scene_references

    one_loss = type(objective).step is Objective.step and type(objective).losses is Objective.losses
    if not one_loss:
        raise ValueError(f"rank_weight needs an objective of one loss (regression, emd, sat, "
                         f"nt), not {name!r}")  # fmt: skip
    cfg = RankingConfig(crop=crop, seed=seed)
    files = scene_references(train_items) if references is None else references
    term = RankingTerm(load_references(files, crop + 2 * cfg.border), cfg, workers)
    return WithRankingHinge(objective, term, weight)
