"""Adversarial attacks on quality models (docs/maths.md §5), in pixel space [0, 1].

The named suite (:data:`ATTACKS`, :func:`run_attack`) is what evaluation runs.
Gradient attacks: :func:`fgsm`, :func:`pgd` (random start, restarts keeping the worst case per
sample, expectation over transformation for stochastic models) and :func:`score_reflection`
(Eq. 5, one-step or iterative), and :func:`rank_pgd`, which attacks the batch's rank order
(a differentiable SRCC) rather than each score. Every update goes through the fused
``attack_step`` op.
Checks against gradient masking: :func:`soft_rank` (attack CPRL through the differentiable soft
rank), :func:`square` (gradient-free, score-based L-infinity) and :func:`transfer` (crafted on
another model).

Every attack works on any module mapping images ``[N, 3, H, W]`` in [0, 1] to scores ``[N]``;
it runs the model in eval mode and restores its mode, never touches parameter gradients, keeps
``|x' - x|_inf <= eps`` and ``x'`` in [0, 1], and is reproducible with a seeded generator.
"""

from cprl_fast.attacks.gradient import fgsm, pgd, rank_pgd, score_reflection
from cprl_fast.attacks.graphed import GraphedPGD
from cprl_fast.attacks.losses import mse_loss, reflection_loss, soft_srcc
from cprl_fast.attacks.masking import pgd_soft_rank, soft_rank, square
from cprl_fast.attacks.suite import (
    ATTACKS,
    SUITES,
    black_box_checks,
    check_attack_names,
    needs_source,
    run_attack,
    transfer,
    white_box,
)

__all__ = [
    "ATTACKS",
    "SUITES",
    "GraphedPGD",
    "black_box_checks",
    "check_attack_names",
    "fgsm",
    "mse_loss",
    "needs_source",
    "pgd",
    "pgd_soft_rank",
    "rank_pgd",
    "reflection_loss",
    "run_attack",
    "score_reflection",
    "soft_rank",
    "soft_srcc",
    "square",
    "transfer",
    "white_box",
]
