"""Named model presets (which model with which training settings) and training recipes (how
the images reach the model and how it is optimised): one definition for the study, reproduce,
the demo and the CLI."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cprl_fast.train import TrainConfig

#: The Gaussian noise (pixel units) the ``-noise`` models train with: the usual level for
#: median smoothing at that sigma (``study --certify 0.25``).
STUDY_NOISE_SIGMA = 0.25
#: The models by preset name: the label reports print and the training settings that define each
#: (a TrainConfig's fields). The study trains any of them; reproduce's Table 6 trains ``ca``.
MODEL_PRESETS: dict[str, tuple[str, dict]] = {
    "resnet": ("ResNet", {"model": "resnet"}),
    "ca": ("CA alone (no PNS)", {"model": "cprl", "objective": "regression"}),
    "cprl": ("CPRL (CA + PNS)", {"model": "cprl"}),
    "sat": ("SAT", {"model": "sat"}),
    "nt": ("NT", {"model": "nt"}),
    "resnet-noise": ("ResNet, noise-trained", {"model": "resnet",
                                               "noise_sigma": STUDY_NOISE_SIGMA}),
    "ca-noise": ("CA alone, noise-trained", {"model": "cprl", "objective": "regression",
                                             "noise_sigma": STUDY_NOISE_SIGMA}),
    "cprl-noise": ("CPRL, noise-trained", {"model": "cprl", "noise_sigma": STUDY_NOISE_SIGMA}),
    # the PNS weight that avoided the paper's lambda's collapses (results/cprl-lambda-builtin-v2)
    "cprl-lam0.1": ("CPRL, lambda 0.1", {"model": "cprl", "objective_options": {"lam": 0.1}}),
}  # fmt: skip

#: Training recipes by name: a line that says what each does and the TrainConfig settings that
#: define it (model options under ``model_options``). A command's explicit flags override them.
#:
#: - ``resized``: each image resized (shorter side) and cropped to ``image_size``, scored whole;
#:   a constant learning rate. The paper's preprocessing, for a backbone with ImageNet weights.
#: - ``native``: random 64 px crops of the 256 px images (the built-in data's size: no resizing
#:   there; another dataset's images are resized to 256 px on their shorter side), flipped; Kang et
#:   al.'s local contrast normalisation in front of the network; an image scored as the mean over
#:   its 64 px tiles; one-cycle learning rate peaking at 1e-3, batches of 32; every training scene
#:   trains (``val_ratio`` 0) and the last checkpoint, at the end of the schedule, is the model (on
#:   three folds it scored higher on the test scenes than the checkpoint a 2-scene validation split
#:   chose). The best recipe found for a ResNet-18 trained from scratch on builtin-v2
#:   (``results/learning-builtin-v2``).
RECIPES: dict[str, tuple[str, dict]] = {
    "resized": ("images resized to --image-size and scored whole, constant learning rate "
                "(the paper's preprocessing)", {}),
    "native": ("64 px crops at native resolution of the built-in 256 px images (other "
               "images: shorter side resized to --image-size 256 first), local contrast "
               "normalisation, scored by 64 px tiles, one-cycle lr 1e-3, batch 32, the last "
               "checkpoint (no validation split)",
               {"image_size": 256, "train_crop": 64, "hflip": True, "schedule": "onecycle",
                "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "val_ratio": 0.0,
                "model_options": {"input_norm": "lcn", "patch": 64}}),
}  # fmt: skip


def recipe_settings(name: str) -> dict:
    """The settings of recipe ``name`` (a copy: TrainConfig fields, ``model_options`` nested);
    ValueError naming the recipes for an unknown name."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    settings = dict(RECIPES[name][1])
    if "model_options" in settings:
        settings["model_options"] = dict(settings["model_options"])
    return settings


def preset_config(name: str, base: TrainConfig) -> TrainConfig:
    """``base`` (a :class:`cprl_fast.train.TrainConfig`, e.g. a recipe's) with model preset
    ``name``'s settings, its model and objective options merged over the base's: the run the
    study trains."""
    changes = dict(MODEL_PRESETS[name][1])
    for options in ("model_options", "objective_options"):
        changes[options] = {**getattr(base, options), **changes.pop(options, {})}
    return dataclasses.replace(base, **changes)
