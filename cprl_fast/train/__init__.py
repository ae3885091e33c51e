"""Training: objectives (:mod:`.objectives`, the PNS game in :mod:`.pns`), the trainer and its
checkpoints."""

from cprl_fast.train.objectives import OBJECTIVES, Objective, make_objective
from cprl_fast.train.pns import ParamGroups, faithful_step, fast_step, param_groups
from cprl_fast.train.trainer import TrainConfig, Trainer, build_model, build_optimizers

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ParamGroups",
    "TrainConfig",
    "Trainer",
    "build_model",
    "build_optimizers",
    "faithful_step",
    "fast_step",
    "make_objective",
    "param_groups",
]
