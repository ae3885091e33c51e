"""Training: the min-max PNS game of CPRL (:mod:`.pns`), the trainer and its checkpoints."""

from cprl_fast.train.pns import ParamGroups, faithful_step, fast_step, param_groups
from cprl_fast.train.trainer import TrainConfig, Trainer, build_model, build_optimizers

__all__ = [
    "ParamGroups",
    "TrainConfig",
    "Trainer",
    "build_model",
    "build_optimizers",
    "faithful_step",
    "fast_step",
    "param_groups",
]
