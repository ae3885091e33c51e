"""The named attacks that ``evaluate``, ``reproduce`` and the CLI run, with their settings: one
registry (:data:`ATTACKS`), each entry the attack function, its fixed settings and whether it
draws random numbers (then it gets the evaluation's seeded generator).

    >>> from cprl_fast.attacks import ATTACKS, run_attack
    >>> sorted(ATTACKS)
    ['fgsm', 'pgd', 'pgd-soft', 'rank', 'reflect', 'reflect10', 'square']
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cprl_fast.attacks.gradient import fgsm, pgd, rank_pgd, score_reflection
from cprl_fast.attacks.masking import pgd_soft_rank, square
from cprl_fast.registry import Registry

ATTACKS = Registry("attack")

ATTACKS.register("fgsm", settings={}, seeded=False,
                 about="one gradient-sign step on (h(x) - y)^2")(fgsm)  # fmt: skip
ATTACKS.register("pgd", settings={"steps": 10}, seeded=True,
                 about="PGD, 10 steps of eps/4 from a random start")(pgd)  # fmt: skip
ATTACKS.register("reflect", settings={"steps": 1}, seeded=True,
                 about="one-step score reflection (Eq. 5)")(score_reflection)  # fmt: skip
ATTACKS.register("reflect10", settings={"steps": 10}, seeded=True,
                 about="10-step score reflection")(score_reflection)  # fmt: skip
ATTACKS.register("rank", settings={"steps": 10}, seeded=True,
                 about="rank-order PGD, 10 steps on the batch's soft SRCC")(rank_pgd)  # fmt: skip
ATTACKS.register("pgd-soft", settings={"steps": 10}, seeded=True,
                 about="PGD through the soft rank (CA models)")(pgd_soft_rank)  # fmt: skip
ATTACKS.register("square", settings={"queries": 300}, seeded=True,
                 about="Square attack, gradient-free, 300 queries")(square)  # fmt: skip


def check_attack_names(names: Iterable[str]) -> list[str]:
    """The names as a list, each checked against :data:`ATTACKS` (ValueError naming it)."""
    names = list(names)
    for name in names:
        ATTACKS.check(name)
    return names


def run_attack(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """Attack ``name`` with its registered settings at budget ``eps``."""
    info = ATTACKS.info(name)
    seeded = {"generator": generator} if info["seeded"] else {}
    return ATTACKS.get(name)(model, x, y, eps=eps, **info["settings"], **seeded)
