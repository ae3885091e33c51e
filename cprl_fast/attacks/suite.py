"""The named attacks that ``evaluate``, ``reproduce``, ``audit``, ``study`` and the CLI run,
with their settings: one registry (:data:`ATTACKS`), each entry the attack function, its fixed
settings, whether it draws random numbers (then it gets the evaluation's seeded generator) and
whether it reads the attacked model's gradients (``white_box``; a black-box entry names the
audit check that compares it with the white-box attacks, ``check``). The named suites the
commands run by default are :data:`SUITES`.

    >>> from cprl_fast.attacks import ATTACKS, run_attack
    >>> len(ATTACKS), sorted(ATTACKS)[:4]
    (10, ['fgsm', 'pgd', 'pgd-soft', 'rank'])
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cprl_fast.attacks.gradient import fgsm, pgd, rank_pgd, score_reflection
from cprl_fast.attacks.masking import pgd_soft_rank, square
from cprl_fast.checks import check_named_once
from cprl_fast.registry import Registry

ATTACKS = Registry("attack")

ATTACKS.register("fgsm", white_box=True, settings={}, seeded=False,
                 about="one gradient-sign step on (h(x) - y)^2")(fgsm)  # fmt: skip
ATTACKS.register("pgd", white_box=True, settings={"steps": 10}, seeded=True,
                 about="PGD, 10 steps of eps/4 from a random start")(pgd)  # fmt: skip
ATTACKS.register("reflect", white_box=True, settings={"steps": 1}, seeded=True,
                 about="one-step score reflection (Eq. 5)")(score_reflection)  # fmt: skip
ATTACKS.register("reflect10", white_box=True, settings={"steps": 10}, seeded=True,
                 about="10-step score reflection")(score_reflection)  # fmt: skip
ATTACKS.register("rank", white_box=True, settings={"steps": 10}, seeded=True,
                 about="rank-order PGD, 10 steps on the batch's soft SRCC")(rank_pgd)  # fmt: skip
ATTACKS.register("rank3", white_box=True, settings={"steps": 10, "restarts": 3}, seeded=True,
                 about="rank-order PGD, best of 3 restarts of 10 steps")(rank_pgd)  # fmt: skip
ATTACKS.register("pgd-soft", white_box=True, settings={"steps": 10}, seeded=True,
                 about="PGD through the soft rank (CA models)")(pgd_soft_rank)  # fmt: skip
ATTACKS.register("square", white_box=False, check="gradient_free_not_stronger",
                 settings={"queries": 300}, seeded=True,
                 about="Square attack, gradient-free, 300 queries")(square)  # fmt: skip
ATTACKS.register("square100", white_box=False, check="gradient_free_not_stronger",
                 settings={"queries": 100}, seeded=True,
                 about="Square attack, 100 queries (cheaper audits)")(square)  # fmt: skip


def transfer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, eps: float = 1 / 255,
    source: nn.Module | None = None, steps: int = 10, generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """The transfer (black-box) attack: ``steps``-step score reflection crafted on ``source``,
    another trained model, and handed to ``model``, whose gradients are never read."""
    if source is None:
        raise ValueError(
            "attack 'transfer' needs a source model to craft the images on "
            "(audit(..., source=model), cprl-fast audit --transfer-from CKPT)"
        )
    return score_reflection(source, x, y, eps, steps=steps, generator=generator)


ATTACKS.register("transfer", white_box=False, check="transfer_not_stronger",
                 settings={"steps": 10}, seeded=True, needs_source=True,
                 about="10-step score reflection crafted on another model")(transfer)  # fmt: skip


#: The suites the commands run by default: ``protocol`` (evaluate, reproduce: Tables 1-4),
#: ``demo``, ``audit`` (cprl-fast audit, every eps), ``study`` (each run of a study; Square with
#: 100 queries to keep a study's cost down), ``b-sweep`` and ``ablation`` (reproduce's Tables 5
#: and 6) and ``unbounded`` (the audit's check at eps = 1: iterative, deterministic from the
#: clean image).
SUITES: dict[str, tuple[str, ...]] = {
    "protocol": ("fgsm", "pgd", "reflect"),
    "demo": ("fgsm", "pgd", "rank"),
    "audit": ("fgsm", "pgd", "reflect10", "rank", "square"),
    "study": ("fgsm", "pgd", "reflect10", "rank", "square100"),
    "b-sweep": ("fgsm",),
    "ablation": ("fgsm", "pgd"),
    "unbounded": ("reflect10",),
}


def white_box() -> tuple[str, ...]:
    """The attacks that read the attacked model's gradients, in registration order."""
    return tuple(n for n in ATTACKS if ATTACKS.info(n)["white_box"])


def black_box_checks() -> dict[str, str]:
    """Black-box attack -> the audit check comparing it with the strongest white-box one."""
    return {n: ATTACKS.info(n)["check"] for n in ATTACKS if not ATTACKS.info(n)["white_box"]}


def needs_source(names: Iterable[str]) -> list[str]:
    """Those of ``names`` that craft their images on a source model (``transfer``)."""
    return [n for n in names if ATTACKS.info(n).get("needs_source")]


def check_attack_names(names: Iterable[str]) -> list[str]:
    """The names as a list, each checked against :data:`ATTACKS` and named once (ValueError
    naming it: a report keyed by attack would hold one result under two columns)."""
    names = list(names)
    for name in names:
        ATTACKS.check(name)
    check_named_once(names, "attacks")
    return names


def run_attack(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float,
    generator: torch.Generator | None = None, source: nn.Module | None = None,
) -> torch.Tensor:  # fmt: skip
    """Attack ``name`` with its registered settings at budget ``eps`` (``source``: the model a
    transfer attack crafts its images on)."""
    info = ATTACKS.info(name)
    extra = {"generator": generator} if info["seeded"] else {}
    if info.get("needs_source"):
        extra["source"] = source
    return ATTACKS.get(name)(model, x, y, eps=eps, **info["settings"], **extra)
