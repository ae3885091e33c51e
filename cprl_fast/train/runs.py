"""Trained runs as the commands read them back (``evaluate``, ``audit``, ``score``, ``export``,
``reproduce``, ``study``).

- :func:`load_trained`: a checkpoint written by the trainer -> its model (built from the
  model card in the checkpoint: model, options, objective, checked against the weights) and
  config, named by its run folder.
- :func:`load_run_splits`: the train and test splits of a run's dataset, its score file read
  once (from a card: read only, never writing the paths the card names).
- :func:`check_held_out`: refuses to score a model on images of scenes its run learned from;
  :func:`check_card_split`: that a run's split, found again from its card, is the one it
  trained on.
- :func:`train_and_test`: a run from its config (``cprl-fast train``): train, choose the
  checkpoint on validation, test it once on the test split.
- :func:`model_card`: what a checkpoint records about the run that produced it
  (``cprl-fast info``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cprl_fast.checks import check_device
from cprl_fast.models.cprl_resnet import ARCHS
from cprl_fast.models.registry import option_defaults, option_names, weights_options
from cprl_fast.train import TrainConfig, build_model
from cprl_fast.train.checkpoint import card_config, card_split, load


@dataclass
class Trained:
    """A trained model as a checkpoint holds it; ``split``: the card's record of the split it
    trained on (:func:`cprl_fast.train.checkpoint.card_split`; ``{}`` where it records none)."""

    name: str
    model: nn.Module
    config: TrainConfig
    path: Path
    split: dict = field(default_factory=dict)


def load_trained(path: str | Path, device: str | torch.device = "cpu",
                 name: str | None = None) -> Trained:  # fmt: skip
    """The model of a checkpoint written by ``cprl-fast train`` (or ``export``), in eval mode on
    ``device``. The checkpoint is data: its card is validated (registered names, every number
    within its documented bounds) and compared with the weights on the meta device before
    anything is allocated; options that only initialise weights (a pretrained file, DBCNN's
    S-CNN pre-training) are not run, since the weights replace what they would make.

    ``name`` defaults to the run folder's name (``runs/cprl-a/best.pt`` -> ``cprl-a``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (no pretrained weights are distributed: train one "
            "with cprl-fast train and pass its best.pt)"
        )
    device = check_device(device)
    state = load(path, map_location="cpu")
    cfg = card_train_config(state, path)
    weights = state["model"]
    with torch.device("meta"):
        skeleton = build_model(cfg, for_weights=True)
    _check_weights(skeleton, weights, cfg, path)
    model = build_model(cfg, for_weights=True)
    model.load_state_dict(weights)
    cfg = dataclasses.replace(cfg, device=str(device))  # where it is loaded, not where it trained
    return Trained(name or path.resolve().parent.name, model.to(device).eval(), cfg, path,
                   card_split(state))  # fmt: skip


def card_train_config(state: dict, path: str | Path) -> TrainConfig:
    """The run config of a checkpoint's model card, validated (one line naming the field on
    error); the device is left at ``cpu`` (where a checkpoint is loaded is the caller's)."""
    data = card_config(state)
    data.pop("device", None)
    for key in ("model_options", "objective_options"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"checkpoint {path}: model card field {key} must be an object, got "
                             f"{type(data[key]).__name__}")  # fmt: skip
    for key in ("dataset", "root", "split_file", "model", "objective", "out_dir"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"checkpoint {path}: model card field {key} must be a string, got "
                             f"{type(data[key]).__name__}")  # fmt: skip
    try:
        return TrainConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path}: model card: {err}") from None


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _check_weights(skeleton: nn.Module, weights: dict, cfg: TrainConfig, path: Path) -> None:
    """Refuses weights that are not those of the card's model: naming the card's arch and the
    weights' where another arch fits them, else the first differing key with both shapes and
    the card's fields that decide the architecture (all built on the meta device)."""
    want = _shapes(skeleton.state_dict())
    got = _shapes(weights)
    if want == got:
        return
    arch = cfg.model_options.get("arch", option_defaults(cfg.model).get("arch"))
    for other in (a for a in ARCHS if a != arch and "arch" in option_names(cfg.model)):
        with torch.device("meta"):
            candidate = dataclasses.replace(
                cfg, model_options={**cfg.model_options, "arch": other})
            if _shapes(build_model(candidate, for_weights=True).state_dict()) == got:
                raise ValueError(f"checkpoint {path}: the model card says arch={arch!r}, the "
                                 f"weights are those of arch={other!r}")  # fmt: skip
    card = {"model": cfg.model, **weights_options(cfg.model_options)}
    fields = ", ".join(f"{k}={v!r}" for k, v in card.items())
    first = next((k for k in want if k in got and want[k] != got[k]), None)
    if first is not None:
        what = (f"{first!r}: the card's model has {list(want[first])}, the weights "
                f"{list(got[first])}")  # fmt: skip
    else:
        missing = next((k for k in want if k not in got), None)
        if missing is not None:
            what = f"{missing!r} is in the card's model but not in the weights"
        else:
            extra = next(k for k in got if k not in want)
            what = f"{extra!r} is in the weights but not in the card's model"
    raise ValueError(f"checkpoint {path}: the model card ({fields}) disagrees with the weights: "
                     f"{what}")  # fmt: skip


def load_run_splits(cfg: TrainConfig, splits=("train", "test"), dataset: str | None = None,
                    root: str | None = None, from_card: bool = False) -> dict:  # fmt: skip
    """The splits of the run's dataset (or ``dataset`` under ``root``) with its split file, seed
    and image size. ``from_card``: ``cfg`` comes from a checkpoint's model card, whose paths
    are only read, never written: its split file is used if it exists (else the split is
    recomputed from its seed in memory), and its dataset root only if the dataset is already
    there (a built-in dataset missing there is generated in the default cache instead)."""
    from cprl_fast.data import load_splits
    from cprl_fast.data.builtin import is_generated

    name = dataset or cfg.dataset
    split_file, data_root = cfg.split_file, root or cfg.root
    if from_card:
        if split_file is not None and not Path(split_file).is_file():
            split_file = None
        if root is None and name.startswith("builtin") and cfg.root is not None \
                and not is_generated(name, cfg.root):  # fmt: skip
            data_root = None
    return load_splits(name, data_root, tuple(splits), split_file=split_file,
                       seed=cfg.split_seed, val_ratio=cfg.val_ratio, folds=cfg.folds,
                       fold=cfg.fold, image_size=cfg.image_size, train_crop=cfg.train_crop,
                       hflip=cfg.hflip)  # fmt: skip


#: The entries of a split record that identify it (the scene lists aside, which a card omits).
SPLIT_IDENTITY = ("dataset", "seed", "train_ratio", "val_ratio", "folds", "fold", "score_sha256",
                  "counts")  # fmt: skip


def check_card_split(trained: Trained, dataset) -> None:
    """Raises ``ValueError`` unless ``dataset`` (a side of the split of ``trained``'s run,
    found again from its card: its split file, else its seed) is of the split the card records
    it trained on, entry by entry of :data:`SPLIT_IDENTITY` that the card holds. A split file
    that is gone (recomputed from the seed, where a hand-made file has none) or was edited
    since would put images it trained on among those it is tested on."""
    found = getattr(dataset, "split_info", {}) or {}
    if not trained.split or found.get("dataset") != trained.split.get("dataset"):
        return
    for key in SPLIT_IDENTITY:
        if key not in trained.split:
            continue
        was, now = trained.split[key], found.get(key)
        if key == "counts" and isinstance(was, dict) and isinstance(now, dict):
            # the held-out sides' (a card from before validation splits counts its val scenes
            # on the training side)
            was = {k: v for k, v in was.items() if k.startswith(("val_", "test_"))}
            now = {k: now.get(k) for k in was}
        if was != now:
            where = trained.config.split_file
            source = (f"its split file {where}" if where is not None and Path(where).is_file()
                      else f"its seed ({trained.config.split_seed}; the split file {where} is "
                      "not there)" if where is not None else "its seed")  # fmt: skip
            fix = ("put its split file back where the card says, unchanged" if where is not None
                   else "the dataset's scenes are not those it trained on")  # fmt: skip
            raise ValueError(
                f"checkpoint {trained.path} ({trained.name}) trained on a split with {key}="
                f"{was!r}; found again from {source}, it has {key}={now!r}: its test images "
                f"could hold images it trained on; {fix}"
            )


def check_held_out(trained: Trained, evaluated, split: str, root: str | None = None) -> None:
    """Refuses to score ``trained`` on ``evaluated`` (the ``split`` side, ``val`` or ``test``, of
    a dataset under ``root``) where its run learned from any of those images' scenes: its
    training side, and for ``test`` its validation side too (which chose its checkpoint), as
    its card's split settings give them on that dataset. A model of another split of the same
    dataset (another seed, fold or ratio) may have trained on the very images it is scored on.
    Datasets made of the same photographs (builtin and builtin-v2: their loaders' registered
    ``photographs``) count as one, scene by name. Other datasets, and the ``train`` and ``all``
    sides a caller asks for knowingly, pass."""
    from cprl_fast.data.base import same_photographs

    cfg = trained.config
    if split not in ("val", "test"):
        return
    if cfg.dataset != evaluated.name:
        if not same_photographs(cfg.dataset, evaluated.name):
            return
        root = None  # the model's own dataset, from its card
    learned_sides = ("train",) if split == "val" else ("train", "val")
    sides = load_run_splits(cfg, learned_sides, root=root, from_card=True)
    check_card_split(trained, sides["train"])
    learned = {it.scene for side in sides.values() for it in side.items}
    evaluated_scenes = {it.scene for it in evaluated.items}
    shared = sorted(evaluated_scenes & learned)
    if shared:
        own = f"split seed {cfg.split_seed}, val_ratio {cfg.val_ratio}"
        if cfg.folds is not None:
            own += f", fold {cfg.fold} of {cfg.folds}"
        if cfg.split_file is not None:
            own += f", split file {cfg.split_file}"
        raise ValueError(
            f"checkpoint {trained.path} ({trained.name}) learned from {len(shared)} of the "
            f"{len(evaluated_scenes)} scenes of the {evaluated.name} {split} images evaluated "
            f"(e.g. {shared[0]!r}; its run's split: {own}"
            + (f", of {cfg.dataset}, made of the same photographs): scored there, it would not "
               f"be held out; score it on {cfg.dataset}'s {split} split"
               if cfg.dataset != evaluated.name else
               "): scored there, it would not be held out; evaluate models of one split together")
        )


def train_and_test(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                   log: Callable[[str], object] = print) -> dict:  # fmt: skip
    """Trains the run ``cfg`` describes (or resumes it), then scores the test split once with
    the model chosen on validation (``best.pt``, else ``last.pt``). Returns ``{"val": the
    trainer's result, "checkpoints": [paths written], "curves": the training curves' figure
    (:func:`~cprl_fast.train.logs.draw_curves`), "test": metrics with their intervals
    (:func:`~cprl_fast.metrics.scores_with_intervals`), the numbers of images and scenes and
    the chosen file's name}`` (no ``test`` when no checkpoint was written); ``log`` gets the
    splits' sizes and the test line."""
    from cprl_fast.evaluate import predictions
    from cprl_fast.metrics import scores_with_intervals
    from cprl_fast.reports import interval
    from cprl_fast.train import Trainer
    from cprl_fast.train.trainer import check_out_dir

    check_out_dir(Path(cfg.out_dir))  # before the data are read or generated
    splits = load_run_splits(cfg, ("train", "val", "test"))
    log(f"train: {splits['train']}, val: {splits['val']}, test: {splits['test']}; "
        f"writing to {cfg.out_dir}")  # fmt: skip
    trainer = Trainer(cfg, splits["train"], splits["val"])
    result = trainer.fit(resume=resume, overwrite=overwrite)
    out = Path(cfg.out_dir)
    written = [str(p) for p in (out / "last.pt", out / "best.pt") if p.is_file()]
    summary = {"val": result, "checkpoints": written}
    if (out / "curves.png").is_file():
        summary["curves"] = str(out / "curves.png")
    if written:  # the test split, once, with the model chosen on val (or the last one)
        chosen = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
        trainer.model.load_state_dict(load(chosen, map_location=trainer.device)["model"])
        pred, target = predictions(trainer.model.eval(), splits["test"], None, 0.0,
                                   cfg.batch_size, trainer.device)  # fmt: skip
        test = {**scores_with_intervals(pred, target), "images": len(target),
                "scenes": len({it.scene for it in splits["test"].items}), "model": chosen.name}
        summary["test"] = test
        log(f"test ({chosen.name}, {test['images']} images of {test['scenes']} scenes; 95% "
            f"bootstrap intervals over the images): SRCC {interval(test['srcc'], test['srcc_ci'])}"
            f", PLCC {interval(test['plcc'], test['plcc_ci'])}")  # fmt: skip
    return summary


#: The run settings a model card shows, in this order.
CARD_SETTINGS = ("model", "model_options", "objective", "objective_options", "dataset",
                 "image_size", "epochs", "batch_size", "lr", "seed", "split_seed",
                 "val_ratio")  # fmt: skip


def model_card(path: str | Path) -> dict:
    """What a checkpoint records about the run that produced it: its settings (the card is
    checked against its schema; the default objective is named), split identity, steps,
    best validation SRCC, thread count, library versions, the machine it trained on
    (:func:`cprl_fast.installation.machine`; ``{}`` in checkpoints from before 2026-12-07) and any
    recorded audit."""
    state = load(path)
    cfg = card_train_config(state, path)
    config = {**card_config(state), "objective": cfg.objective_name}
    split = card_split(state)
    return {
        "checkpoint": str(path),
        **{k: config.get(k) for k in CARD_SETTINGS},
        "split": split,
        "steps": state.get("step"),
        "best_val_srcc": state.get("best"),
        "threads": state.get("threads"),
        "versions": state.get("versions", {}),
        "machine": state.get("machine", {}),
        "audit": state.get("audit"),
    }
