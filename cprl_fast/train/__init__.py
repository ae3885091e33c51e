"""Training: objectives (:mod:`.objectives`, the PNS game in :mod:`.pns`), the trainer and its
checkpoints, and a pretraining that needs no download (:mod:`.ranking`)."""

from cprl_fast.train.objectives import OBJECTIVES, Objective, make_objective
from cprl_fast.train.pns import ParamGroups, faithful_step, fast_step, param_groups
from cprl_fast.train.ranking import RankingConfig, RankingResult, pretrain_by_ranking
from cprl_fast.train.trainer import TrainConfig, Trainer, build_model, build_optimizers

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ParamGroups",
    "RankingConfig",
    "RankingResult",
    "TrainConfig",
    "Trainer",
    "build_model",
    "build_optimizers",
    "faithful_step",
    "fast_step",
    "make_objective",
    "param_groups",
    "pretrain_by_ranking",
]
