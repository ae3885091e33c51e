"""Training of quality models with their objectives (:mod:`cprl_fast.train.objectives`): the
CPRL min-max PNS game, plain regression, NIMA's EMD, SAT, NT.

:func:`train` runs ``epochs`` epochs over a dataset with a tqdm bar, logs every iteration's
losses to ``out_dir/log.csv`` (and TensorBoard when installed), evaluates on the validation split
each epoch (SRCC, PLCC, MSE; ``validation.csv``), keeps ``last.pt`` (everything a resume needs)
and ``best.pt`` (by validation SRCC; the model and its card only), and draws both logs as
``curves.png`` when the run ends (:mod:`cprl_fast.train.logs`). ``resume=True``
continues exactly from ``last.pt``: the data order is a seeded permutation per epoch, so a
resumed run skips the batches already seen and draws the same crops from the restored RNG.
Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
DistributedDataParallel (SyncBatchNorm by default) and each rank reads its share of each batch
and draws its own random numbers (the global RNG seeded from the seed, step and rank at each
step).
Resuming is exact with ``num_workers=0``; with workers, the random crops after a resume come
from freshly seeded workers (the data order is still exact).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from cprl_fast import metrics
from cprl_fast.checks import MAX_SEED, check_device, check_noise_sigma
from cprl_fast.data.splits import check_split_folds
from cprl_fast.devices import pins
from cprl_fast.installation import machine
from cprl_fast.io import TEMPORARY, open_own_file, remove_stale_temporaries
from cprl_fast.models.registry import (
    MODELS,
    build,
    check_options,
    default_objective,
    option_defaults,
    option_names,
    weights_options,
)
from cprl_fast.train import checkpoint
from cprl_fast.train.logs import LOG_EVERY, append_validation, draw_curves, truncate_log
from cprl_fast.train.objectives import OBJECTIVES, make_objective, option_fields
from cprl_fast.train.schedule import onecycle

log = logging.getLogger("cprl_fast.train")


#: Settings of the run that define the experiment: a resumed run must have the same. The
#: optimisers' saved state carries ``lr`` and ``weight_decay``, so a resume with others would
#: train on with the old ones while the card recorded the new. Not compared: ``epochs`` and
#: ``max_steps`` (a run may be extended; but see :data:`CURVE_KEYS`), the device, ``bf16``,
#: ``sync_bn`` and the worker count.
EXPERIMENT_KEYS = (
    "model", "model_options", "objective", "objective_options", "dataset", "split_seed",
    "val_ratio", "folds", "fold", "seed", "batch_size", "noise_sigma", "train_crop", "hflip",
    "schedule", "rank_weight", "lr", "weight_decay", "image_size", "clip_grad", "freeze_bn",
)  # fmt: skip
#: Settings a schedule's curve depends on (schedule: keys), compared on resume as well:
#: ``onecycle``'s learning rate at each step is a function of ``epochs``.
CURVE_KEYS = {"onecycle": ("epochs",)}


#: (setting, lowest value, type): each must be a finite number of that type, at least the
#: lowest (strictly above it where the lowest is 0.0 and the setting is a rate or a norm).
RUN_NUMBERS = (
    ("lr", 0.0, float), ("weight_decay", None, float), ("batch_size", 1, int),
    ("epochs", 1, int), ("image_size", 1, int), ("clip_grad", 0.0, float),
    ("seed", 0, int), ("split_seed", 0, int), ("num_workers", 0, int), ("max_steps", 0, int),
    ("train_crop", 1, int), ("rank_weight", None, float),
)  # fmt: skip
#: Run settings whose ``None`` means "off".
OPTIONAL_NUMBERS = ("clip_grad", "max_steps", "train_crop")
#: The learning-rate schedules (:mod:`cprl_fast.train.schedule`).
SCHEDULES = ("constant", "onecycle")


#: The documented upper bounds of the run's counts (a model card outside them is refused before
#: anything is built or allocated).
RUN_LIMITS = {"batch_size": 65536, "epochs": 100_000, "image_size": 4096, "num_workers": 256,
              "max_steps": 10**9, "seed": MAX_SEED, "split_seed": MAX_SEED,
              "train_crop": 4096}  # fmt: skip


def _check_number(name: str, value, low, kind) -> None:
    if value is None and name in OPTIONAL_NUMBERS:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite {kind.__name__}, got {value!r}")
    if low is None:
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    elif isinstance(low, float) and not value > low:
        raise ValueError(f"{name} must be > {low:g}, got {value!r}")
    elif value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if name in RUN_LIMITS and value > RUN_LIMITS[name]:
        raise ValueError(f"{name} must be <= {RUN_LIMITS[name]}, got {value!r}")


@dataclass
class TrainConfig:
    """The settings of one run (saved in every checkpoint): which model with which options,
    which objective with which options, and the run itself. ``model_options`` are the model
    factory's arguments (``arch``, ``placement``, ``b``, ...); ``objective_options`` the
    objective's (``lam``, ``mode``, ...). :meth:`from_dict` also takes them as flat keys."""

    dataset: str = "builtin"
    root: str | None = None
    split_file: str | None = None
    split_seed: int = 0
    val_ratio: float = 0.2  #: share of the training scenes held out to choose best.pt
    folds: int | None = None  #: K-fold cross-validation by scene (instead of the 4:1 split)
    fold: int = 0  #: which fold is the test side, with ``folds``
    model: str = "cprl"  #: a name of cprl_fast.models.MODELS
    model_options: dict = field(default_factory=dict)
    objective: str | None = None  #: a name of OBJECTIVES; None: the model's default
    objective_options: dict = field(default_factory=dict)
    lr: float = 3e-5
    weight_decay: float = 1e-2
    batch_size: int = 16
    epochs: int = 10
    image_size: int = 320
    clip_grad: float | None = None
    bf16: bool = False  #: bf16 autocast (CUDA only: a trainer on another device refuses it)
    seed: int = 0
    #: DataLoader worker processes for the training images; with ``rank_weight``, as many
    #: again draw the ranking batches ahead (cprl_fast.train.ranking.RankingTerm)
    num_workers: int = 0
    sync_bn: bool = True  #: SyncBatchNorm under DDP (CUDA only; on CPU use freeze_bn)
    freeze_bn: bool = False  #: BatchNorm layers use their running statistics while training
    device: str = "cpu"
    out_dir: str = "runs/cprl"
    max_steps: int | None = None  #: stop after this many iterations in total (tests, demos)
    #: train on ``x + N(0, noise_sigma^2)`` (pixel units; 0: off): Gaussian noise augmentation,
    #: the standard way to make a median-smoothed model (cprl_fast.certify) accurate
    noise_sigma: float = 0.0
    #: train on random ``train_crop``-px crops of the ``image_size``-px images (None: the whole
    #: ``image_size`` crop); with a model ``patch`` of the same size, the recipe of native-
    #: resolution crops that are scored by tiles at test (cprl_fast.models.inputs)
    train_crop: int | None = None
    hflip: bool = False  #: random horizontal flips of the training crops
    #: learning rate: ``constant`` (``lr`` throughout) or ``onecycle`` (warm up to ``lr`` over
    #: the first tenth of ``epochs``' iterations, then cosine down; torch's OneCycleLR)
    schedule: str = "constant"
    #: weight of RankIQA's ranking hinge beside the objective's loss in every step (0: off):
    #: which of two versions of one crop, distorted more or less, is better
    #: (cprl_fast.train.ranking.with_ranking_hinge); needs ``train_crop``
    rank_weight: float = 0.0
    #: the pristine photographs the ranking crops come from, a folder or a file (None: the
    #: training split's own scenes', from a dataset written by ``cprl-fast synthesize``)
    rank_references: str | None = None

    def __post_init__(self):
        from cprl_fast.data.base import LOADERS

        LOADERS.check(self.dataset)
        MODELS.check(self.model)
        if self.objective is not None:
            OBJECTIVES.check(self.objective)
        check_options(self.model, self.model_options)
        make_objective(self.objective_name, self.objective_options)  # validates the options
        for name, low, kind in RUN_NUMBERS:
            _check_number(name, getattr(self, name), low, kind)
        check_device(self.device)
        if self.train_crop is not None and self.train_crop > self.image_size:
            raise ValueError(f"train_crop must be <= image_size ({self.image_size}), "
                             f"got {self.train_crop!r}")  # fmt: skip
        if not isinstance(self.rank_references, (str, type(None))):
            raise ValueError(f"rank_references must be a path (text), got {self.rank_references!r}")
        if self.rank_weight > 0 and self.train_crop is None:
            raise ValueError("rank_weight needs train_crop: the ranking batches are crops of "
                             "that side at native resolution (--recipe native sets it)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")  # fmt: skip
        if not isinstance(self.hflip, bool):
            raise ValueError(f"hflip must be true or false, got {self.hflip!r}")
        check_noise_sigma(self.noise_sigma, "noise_sigma", zero_ok=True)
        if not (isinstance(self.val_ratio, (int, float)) and 0.0 <= self.val_ratio < 1.0):
            raise ValueError(f"val_ratio must be a number in [0, 1), got {self.val_ratio!r}")
        check_split_folds(self.folds, self.fold)

    @property
    def objective_name(self) -> str:
        return self.objective or default_objective(self.model)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from run settings plus model and objective options, nested
        (``model_options``, ``objective_options``) or flat (``arch``, ``lam``, ...)."""
        run_keys = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in run_keys}
        model = values.get("model", cls.model)
        MODELS.check(model)
        objective = values.get("objective") or default_objective(model)
        OBJECTIVES.check(objective)
        model_options = dict(values.get("model_options") or {})
        objective_options = dict(values.get("objective_options") or {})
        for key, value in data.items():
            if key in run_keys:
                continue
            if key in option_names(model):
                model_options[key] = value
            elif key in option_fields(objective):
                objective_options[key] = value
            else:
                raise ValueError(
                    f"unknown config option {key!r}: not a run setting, not an option of model "
                    f"{model!r} and not one of objective {objective!r}"
                )
        return cls(**{**values, "model_options": model_options,
                      "objective_options": objective_options})  # fmt: skip

    def experiment(self) -> dict:
        """What defines the experiment (compared on resume), options completed with their
        defaults (an option given explicitly at its default is the same experiment); a
        pretrained file's path is not part of it."""
        out = {k: getattr(self, k) for k in EXPERIMENT_KEYS}
        model_options = {**option_defaults(self.model), **self.model_options}
        out["model_options"] = {k: v for k, v in model_options.items() if k != "pretrained"}
        out["objective"] = self.objective_name
        objective = make_objective(self.objective_name, self.objective_options)
        out["objective_options"] = dataclasses.asdict(objective.options)
        return out


def check_same_run(saved: TrainConfig, cfg: TrainConfig, path: str | Path,
                   length: bool = False) -> None:  # fmt: skip
    """Raises ``ValueError`` naming the first setting where ``cfg`` is not the run that wrote
    checkpoint ``path`` (its card's config, ``saved``): the :data:`EXPERIMENT_KEYS`, the
    schedule's :data:`CURVE_KEYS`, and with ``length`` (a finished model reused as it is)
    ``epochs`` and ``max_steps`` too."""
    old, new = saved.experiment(), cfg.experiment()
    keys = [k for k in new if old[k] != new[k]]
    keys += [k for k in CURVE_KEYS.get(cfg.schedule, ()) if getattr(saved, k) != getattr(cfg, k)]
    if length:
        keys += [k for k in ("epochs", "max_steps") if getattr(saved, k) != getattr(cfg, k)]
    if not keys:
        return
    key = keys[0]
    was, has = old.get(key, getattr(saved, key)), new.get(key, getattr(cfg, key))
    why = ""
    if key in CURVE_KEYS.get(cfg.schedule, ()) and not length:
        why = (f": the {cfg.schedule} schedule's curve depends on it (max_steps stops a run "
               "sooner on the same curve)")  # fmt: skip
    raise ValueError(f"checkpoint {path} was trained with {key}={was!r}, this run has "
                     f"{key}={has!r}{why}")  # fmt: skip


def build_model(cfg: TrainConfig, for_weights: bool = False) -> nn.Module:
    """The run's model; ``for_weights``: to receive trained weights, so built without the
    options that only initialise weights (:data:`cprl_fast.models.registry.INIT_OPTIONS`)."""
    options = weights_options(cfg.model_options) if for_weights else cfg.model_options
    return build(cfg.model, **options)


def build_optimizers(
    groups: dict[str, list[nn.Parameter]], cfg: TrainConfig
) -> dict[str, torch.optim.Optimizer]:
    """One AdamW per parameter group of the objective (theta; and phi, xi for the PNS game)."""
    return {
        name: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        for name, params in groups.items()
    }


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def derived_seed(value: int) -> int:
    """A seed derived from the run's (``seed * 1_000_003 + epoch``, ...) as torch takes it:
    modulo 2**64, so that every seed a card may hold (up to 2**63 - 1) works ("Overflow when
    unpacking long long" otherwise), and every smaller derived seed is what it always was."""
    return value % 2**64


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded permutation of the dataset's indices for one epoch."""
    g = torch.Generator().manual_seed(derived_seed(seed * 1_000_003 + epoch))
    return torch.randperm(n, generator=g).tolist()


def step_seed(seed: int, step: int, rank: int = 0, world: int = 1) -> int:
    """The seed of one iteration's random numbers on one process of ``world`` (the noise of
    ``noise_sigma``; in a distributed run the global RNG too): ``(seed * 1_000_003 + step) *
    world + rank``, so a resume is exact and the ranks draw apart."""
    return derived_seed((seed * 1_000_003 + step) * world + rank)


def rank_share(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of one global batch (equal shares)."""
    if len(indices) % world:
        raise ValueError(f"global batch of {len(indices)} does not split over {world} ranks")
    k = len(indices) // world
    return indices[rank * k : (rank + 1) * k]


class Trainer:
    """Holds the model, optimisers and position of one run; :meth:`fit` trains it."""

    def __init__(self, cfg: TrainConfig, train_set, val_set=None, model: nn.Module | None = None):
        """``val_set`` chooses ``best.pt`` (highest SRCC, evaluated every epoch): a validation
        split, never the test split, which a caller evaluates once at the end."""
        self.cfg = cfg
        self.rank, self.world = _distributed()
        self.device = torch.device(cfg.device)
        if cfg.bf16 and self.device.type != "cuda":  # it would train in float32 unsaid
            raise ValueError(f"bf16 autocast is for CUDA devices, and this run's device is "
                             f"{cfg.device}: set bf16 false (a run that trained with it on a "
                             "GPU resumes on a CPU so)")  # fmt: skip
        pretrained = cfg.model_options.get("pretrained")
        if model is None and isinstance(pretrained, (str, Path)) and pretrained != "imagenet":
            from cprl_fast.train.ranking import check_pretraining_scenes

            check_pretraining_scenes(pretrained, train_set, val_set)
        torch.manual_seed(cfg.seed)
        self.model = (model or build_model(cfg)).to(self.device)
        self.objective = make_objective(cfg.objective_name, cfg.objective_options)
        if cfg.rank_weight > 0:
            from cprl_fast.train.ranking import with_ranking_hinge

            self.objective = with_ranking_hinge(
                self.objective, cfg.objective_name, cfg.rank_weight, cfg.train_crop,
                cfg.rank_references, train_set.items, cfg.seed, cfg.num_workers,
            )  # fmt: skip
        self.groups = self.objective.param_groups(self.model)
        self.opts = build_optimizers(self.groups, cfg)
        self.train_set, self.val_set = train_set, val_set
        self.step = 0  # iterations done
        self.best = -math.inf
        self.out = Path(cfg.out_dir)
        self.net = self.model
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())
        if cfg.batch_size == 1 and has_bn and not cfg.freeze_bn:
            raise ValueError(
                f"batch_size 1 cannot train model {cfg.model!r}: its BatchNorm layers need more "
                "than one value per channel; use batch_size >= 2 or freeze_bn=true"
            )
        if self.world > 1:
            if not self.objective.distributed:
                raise ValueError(
                    f"objective {cfg.objective_name!r} does not run through "
                    "DistributedDataParallel yet: train it in one process"
                )
            if self.device.type != "cuda" and not cfg.freeze_bn:
                raise ValueError(
                    "distributed training on the CPU needs freeze_bn=True: SyncBatchNorm runs on "
                    "GPUs only, and per-rank batch statistics would differ from the global batch's"
                )
            if cfg.sync_bn and self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
                self.groups = self.objective.param_groups(self.model)
                self.opts = build_optimizers(self.groups, cfg)
            # a step that updates some groups only leaves the others' parameters unused
            self.net = nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=len(self.groups) > 1
            )

    # -- one iteration ---------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # (non_blocking: from pinned memory the host does not wait; from pageable memory the
        # copy is staged before it returns, so either way x may be freed at once)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.net.train()
        if self.cfg.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        # each process of a distributed run draws its own random numbers (SAT's PGD starts,
        # LWTA's samples, the noise), a function of (seed, step, rank) so that a resume, whose
        # last.pt holds rank 0's RNG state alone, is exact; one process: as before
        seed = step_seed(self.cfg.seed, self.step, self.rank, self.world)
        if self.world > 1:
            torch.manual_seed(seed)
        if self.cfg.noise_sigma > 0:
            g = torch.Generator(device=x.device).manual_seed(seed)
            noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            x = x + self.cfg.noise_sigma * noise
        losses = self.objective.step(self.net, self.model, self.groups, self.opts, x, y,
                                     self.step, self.cfg.clip_grad, self._autocast())  # fmt: skip
        self.step += 1
        return losses

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "step": self.step,
            "best": self.best,
            "rng": checkpoint.rng_state(),
            "config": json.dumps(asdict(self.cfg)),
            "split": json.dumps(getattr(self.train_set, "split_info", {})),
            "threads": torch.get_num_threads(),
            "versions": _versions(),
            "machine": machine(self.device),
        }

    def model_state(self) -> dict:
        """What scoring a model needs (best.pt): the weights and the model card, without the
        optimiser states and RNG that only resuming needs (a third of the size for AdamW)."""
        state = self.state()
        for key in ("optimizers", "rng"):
            del state[key]
        return state

    def save(self, name: str = "last.pt", model_only: bool = False) -> Path:
        path = self.out / name
        if self.rank == 0:
            checkpoint.save_atomic(self.model_state() if model_only else self.state(), path)
        return path

    def load(self, path: str | Path) -> None:
        state = checkpoint.load(path, map_location=self.device)
        saved_config = {**checkpoint.card_config(state), "device": self.cfg.device}
        check_same_run(TrainConfig.from_dict(saved_config), self.cfg, path)
        split = getattr(self.train_set, "split_info", {})
        saved_split = checkpoint.card_split(state)
        if split.get("score_sha256") != saved_split.get("score_sha256"):
            raise ValueError(f"checkpoint {path} was trained on another split or score file")
        if "counts" in saved_split and split.get("counts") != saved_split["counts"]:
            # e.g. a run from before validation splits: its training side held the val scenes
            raise ValueError(
                f"checkpoint {path} was trained on another split: its sides held "
                f"{saved_split['counts']}, this run's hold {split.get('counts')}"
            )
        self.model.load_state_dict(state["model"])
        for k, o in self.opts.items():
            o.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])
        self.best = float(state["best"])
        checkpoint.set_rng_state(state["rng"])
        threads = state.get("threads")
        if self.device.type == "cpu" and threads is not None and threads != torch.get_num_threads():
            log.warning(
                "checkpoint %s was written with %d CPU threads, this run has %d: on the CPU the "
                "resumed run is exact only with the same thread count (reductions are split by "
                "thread); set OMP_NUM_THREADS=%d for a bit-exact continuation",
                path, threads, torch.get_num_threads(), threads,
            )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        return len(self.train_set) // self.cfg.batch_size  # drop the last partial batch

    def evaluate(self) -> dict[str, float]:
        if self.val_set is None or len(self.val_set) < 2:
            return {}
        from cprl_fast.evaluate import predictions

        pred, target = predictions(self.model, self.val_set, None, 0.0, self.cfg.batch_size,
                                   self.device)  # fmt: skip
        return metrics.evaluate_scores(pred, target)

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict[str, float]:
        """Trains to the end (or to ``max_steps``). ``resume``: continue from ``last.pt``;
        ``overwrite``: start over in a folder that holds another run (its checkpoints and log
        are removed). The folder is locked while the run trains. The objective's worker
        processes (the ranking hinge's) are stopped when it returns or raises."""
        with run_folder(self.out, lock=self.rank == 0):
            try:
                return self._fit(resume, overwrite)
            finally:
                self.objective.close()

    def epoch_loader(self, epoch: int, start: int, end: int) -> torch.utils.data.DataLoader:
        """The batches ``start`` to ``end`` (exclusive) of ``epoch``: this process's share of
        each, in the epoch's fixed order. Its own generator (not the global RNG) seeds the
        workers, so a resumed run draws the same augmentation randomness as an uninterrupted
        one. On CUDA the batches come in pinned memory, so that :meth:`train_step` copies them
        to the device without waiting for the copy (no host synchronisation per iteration)."""
        cfg = self.cfg
        order = epoch_order(len(self.train_set), cfg.seed, epoch)
        batches = [
            rank_share(order[b * cfg.batch_size : (b + 1) * cfg.batch_size], self.rank, self.world)
            for b in range(start, end)
        ]
        seeder = torch.Generator().manual_seed(derived_seed(cfg.seed * 7919 + epoch * 104729
                                                            + start))  # fmt: skip
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=batches, num_workers=cfg.num_workers, generator=seeder,
            pin_memory=pins(self.device),
        )  # fmt: skip

    def _schedule(self, total: int) -> None:
        """Sets every optimiser's learning rate (and Adam's beta1) for the next iteration, by
        ``cfg.schedule`` over ``total`` iterations (``epochs`` x batches per epoch: ``max_steps``
        stops a run early without changing its curve, so a resume continues it exactly)."""
        if self.cfg.schedule == "constant":
            return
        lr, beta1 = onecycle(self.step, total, self.cfg.lr)
        for opt in self.opts.values():
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (beta1, group["betas"][1])

    def _log(self, pending, epoch: int, logger, writer, bar, fh) -> None:
        """Reads the losses of the steps since the last log to the host (one transfer for all)
        and writes their rows; stops the run at the first non-finite loss."""
        if not pending:
            return
        values = torch.stack([v.float() for _, losses in pending for v in losses.values()])
        it = iter(values.tolist())
        rows = [(step, {k: next(it) for k in losses}) for step, losses in pending]
        for step, losses in rows:
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                fh.flush()
                kept = (
                    "; last.pt holds the last epoch's end"
                    if (self.out / "last.pt").is_file()
                    else "; no checkpoint was written"
                )
                raise FloatingPointError(
                    f"training stopped at iteration {step}: loss "
                    f"{', '.join(f'{k}={v}' for k, v in bad.items())}{kept}"
                )
            if self.rank == 0:
                logger.writerow([step, epoch, *(losses.get(k, "") for k in self.objective.columns)])
                if writer is not None:
                    for k, v in losses.items():
                        writer.add_scalar(k, v, step)
        bar.set_postfix({k: f"{v:.4f}" for k, v in rows[-1][1].items()})

    def _fit(self, resume: bool, overwrite: bool) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.cfg
        existing = [n for n in RUN_FILES if (self.out / n).exists()]
        if resume:
            if not (self.out / "last.pt").is_file():
                raise FileNotFoundError(f"nothing to resume: {self.out / 'last.pt'} does not exist")
            self.load(self.out / "last.pt")
            if self.rank == 0:
                truncate_log(self.out / "log.csv", self.step)
                truncate_log(self.out / "validation.csv", self.step, "validation log")
        elif existing and self.rank == 0:
            if not overwrite:
                raise ValueError(
                    f"run folder {self.out} already holds a run ({', '.join(existing)}): "
                    "pass --resume to continue it or --overwrite to start over"
                )
            for name in existing:
                (self.out / name).unlink()
        per_epoch = self.batches_per_epoch()
        if per_epoch == 0:
            raise ValueError(
                f"the training split has {len(self.train_set)} images, fewer than one batch of "
                f"{cfg.batch_size}"
            )
        total = cfg.epochs * per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        writer = _tensorboard(self.out) if self.rank == 0 else None
        bar = tqdm(total=total, initial=self.step, desc="training", unit="it",
                   disable=self.rank != 0)  # fmt: skip
        log_fd = open_own_file(self.out / "log.csv", "training log",
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # fmt: skip
        try:
            result = self._loop(total, per_epoch, log_fd, writer, bar)
        except FloatingPointError:  # the curves up to the non-finite loss
            self._draw_curves()
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        self._draw_curves()
        return result

    def _draw_curves(self) -> None:
        """``curves.png`` of the run (rank 0). Without matplotlib (a declared dependency, but a
        machine may lack it) a warning says so: a finished run is not failed for its figure."""
        if self.rank != 0:
            return
        try:
            draw_curves(self.out)
        except ImportError as err:
            log.warning("%s not drawn: %s", self.out / "curves.png", err)

    def _loop(self, total: int, per_epoch: int, log_fd: int, writer, bar) -> dict[str, float]:
        """The iterations from :attr:`step` to ``total``, logged into ``log_fd`` (log.csv),
        ``writer`` (TensorBoard, or None) and ``bar``; validation after each epoch. Returns the
        last validation result."""
        from tqdm import tqdm

        cfg, result = self.cfg, {}
        with os.fdopen(log_fd, "a", newline="") as fh:
            logger = csv.writer(fh)
            columns = self.objective.columns
            if fh.tell() == 0:
                logger.writerow(["step", "epoch", *columns])
            while self.step < total:
                epoch, start = divmod(self.step, per_epoch)
                loader = self.epoch_loader(epoch, start, min(per_epoch, start + total - self.step))
                pending: list[tuple[int, dict[str, torch.Tensor]]] = []
                for x, y in loader:
                    self._schedule(cfg.epochs * per_epoch)
                    pending.append((self.step + 1, self.train_step(x, y)))
                    bar.update(1)
                    if len(pending) >= LOG_EVERY:
                        self._log(pending, epoch, logger, writer, bar, fh)
                        pending = []
                self._log(pending, epoch, logger, writer, bar, fh)
                if self.step % per_epoch == 0 or self.step >= total:
                    result = self.evaluate()
                    if result and self.rank == 0:
                        append_validation(self.out, self.step, epoch, result)
                        if writer is not None:
                            for k, v in result.items():
                                writer.add_scalar(f"validation/{k}", v, self.step)
                        # on its own line above the bar (tqdm.write), rounded
                        shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in result.items())  # fmt: skip
                        tqdm.write(f"epoch {epoch}: validation {shown}")
                        if result["srcc"] > self.best:
                            self.best = result["srcc"]
                            self.save("best.pt", model_only=True)
                    self.save("last.pt")
                fh.flush()
        return result


def _versions() -> dict[str, str]:
    import platform

    from cprl_fast.version import __version__

    return {"cprl_fast": __version__, "torch": str(torch.__version__),
            "python": platform.python_version()}  # fmt: skip


#: The files of a run that starting over in its folder removes (``--overwrite``).
RUN_FILES = ("last.pt", "best.pt", "log.csv", "validation.csv", "curves.png")


def check_out_dir(out: Path) -> None:
    """That a run folder ``out`` is a folder or can be made one, without making it: checked
    before any data are read or generated, so that a mistyped ``out_dir`` costs nothing."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {out} is a file, not a folder")
    base = out
    while not base.exists() and base != base.parent:  # the nearest folder that exists
        base = base.parent
    if not base.is_dir():  # "afile/run": a parent is a file
        raise NotADirectoryError(f"out_dir {out} cannot be created: {os.strerror(errno.ENOTDIR)}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"out_dir {out} cannot be written: {os.strerror(errno.EACCES)}")


@contextlib.contextmanager
def run_folder(out: Path, lock: bool = True) -> Iterator[Path]:
    """The run folder, created, with its stale temporary files (interrupted atomic writes)
    removed and, with ``lock``, locked against a second trainer.

    The lock is ``flock`` on ``out/.lock``: the kernel gives it to one process at a time and
    takes it back when that process ends (a crash or kill -9 leaves no stale lock, and a
    recycled pid cannot hold it). The holder writes its pid and start time into the file while
    holding it (for the message a second trainer gets); the file is removed on release, and a
    process that locked a file removed meanwhile tries again."""
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a parent is a file, no permission, read-only file system, ...
        raise OSError(f"out_dir {out} cannot be created: {err.strerror}") from None
    if not lock:
        yield out
        return
    fd = _take_lock(out / ".lock", out)
    for tmp in out.glob(".*.tmp"):  # temporaries of earlier versions (no pid in the name)
        if not TEMPORARY.match(tmp.name):
            tmp.unlink(missing_ok=True)
    remove_stale_temporaries(out)
    try:
        yield out
    finally:
        (out / ".lock").unlink(missing_ok=True)
        os.close(fd)  # releases the flock


def _take_lock(path: Path, out: Path) -> int:
    """An fd of ``path`` holding its exclusive flock, the owner written into it."""
    import fcntl

    while True:
        fd = open_own_file(path, "run folder's lock file", mode=0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").split()
            os.close(fd)
            who = f" (process {owner[0]})" if owner else ""
            raise RuntimeError(f"run folder {out} is in use by another trainer{who}") from None
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {_start_time(os.getpid())}".encode(), 0)
    return fd


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux; "" elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
