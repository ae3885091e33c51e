"""Training objectives, one registry (:data:`OBJECTIVES`), each with typed options.

An objective says which parameter groups get their own optimiser and what one training step
does. Every model in :data:`cprl_fast.models.MODELS` declares the objective it trains with by
default (``MODELS.info(name)["objective"]``); a run may choose another (``--objective``).

- ``regression``: the mean squared error of the scores (the plain ResNet, LWTA, denoising,
  DBCNN, and CPRL's "CA alone").
- ``pns``: CPRL's min-max PNS game (:mod:`cprl_fast.train.pns`), options ``lam`` and ``mode``
  (``faithful``: Algorithm 1's alternating order; ``fast``: one backward per iteration).
- ``emd``: NIMA's earth mover's distance to a discretised Gaussian around each label over the
  model's score bins, option ``sigma``.
- ``sat``: smooth adversarial training: each batch replaced by its PGD version (``eps``,
  ``steps``, random start) before the MSE step.
- ``nt``: MSE plus ``weight`` times the mean squared L2 norm of the per-sample input gradient
  (double backpropagation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from cprl_fast.checks import check_image_eps
from cprl_fast.registry import Registry
from cprl_fast.train import pns

OBJECTIVES = Registry("objective")

#: An objective's parameter groups by name (``theta``; CPRL's ``phi`` and ``xi`` too), each with
#: its own optimiser.
Groups = dict[str, list[nn.Parameter]]


def _mse(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.mean((scores.float() - y) ** 2)


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class NoOptions:
    pass


class Objective:
    """Plain regression: ``mean((h(x) - y)^2)``, one optimiser for every trainable parameter.

    Subclasses change :meth:`loss` (one loss, one backward) or :meth:`param_groups` and
    :meth:`step` (several).
    """

    Options: ClassVar[type] = NoOptions
    #: the losses one step reports, the columns of log.csv
    columns: ClassVar[tuple[str, ...]] = ("loss",)
    #: whether the step runs through DistributedDataParallel's forward
    distributed: ClassVar[bool] = True

    def __init__(self, options: object):
        self.options = options

    def param_groups(self, model: nn.Module) -> Groups:
        return {"theta": [p for p in model.parameters() if p.requires_grad]}

    def loss(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The training loss of one batch; ``net`` is ``model`` or its DDP wrapper."""
        return _mse(net(x), y)

    def losses(
        self, net: nn.Module, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """The loss one step minimises and the losses it logs (by column) at iteration ``t``."""
        loss = self.loss(net, model, x, y)
        return loss, {self.columns[0]: loss}

    def step(
        self, net: nn.Module, model: nn.Module, groups: Groups,
        opts: pns.Optimizers, x: torch.Tensor, y: torch.Tensor, t: int,
        clip: float | None, autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """One optimisation step at iteration ``t`` of :meth:`losses`' total; returns the logged
        losses (before the update) as detached 0-d tensors, never read to the host inside the
        step (no GPU synchronisation)."""
        opt = opts["theta"]
        opt.zero_grad(set_to_none=True)
        with autocast:
            total, logged = self.losses(net, model, x, y, t)
        total.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(groups["theta"], clip)
        opt.step()
        return {k: v.detach() for k, v in logged.items()}

    def close(self) -> None:
        """Releases what the objective holds between steps (worker processes; none here): the
        trainer calls it when a run's training ends, also on an error. A later step may still
        follow (a resume), and starts them again."""


OBJECTIVES.register("regression", about="mean squared error of the scores")(Objective)


@dataclass(frozen=True)
class PNSOptions:
    lam: float = 1.0  #: weight lambda of the intervention losses
    mode: str = "faithful"  #: "faithful" (Algorithm 1's order) or "fast" (one backward)

    def __post_init__(self):
        _positive("lam", self.lam)
        if self.mode not in pns.STEPS:
            raise ValueError(f"mode must be one of {', '.join(pns.STEPS)}, got {self.mode!r}")


@OBJECTIVES.register("pns", about="CPRL's min-max PNS game (options lam, mode)")
class PNSGame(Objective):
    """CPRL's min-max PNS game: theta, phi and xi each with its own optimiser."""

    Options = PNSOptions
    columns = ("l_reg", "l_sf", "l_nc")

    def param_groups(self, model: nn.Module) -> Groups:
        groups = pns.param_groups(model)  # (not dataclasses.asdict: it would copy the tensors)
        return {"theta": groups.theta, "phi": groups.phi, "xi": groups.xi}

    def step(
        self, net: nn.Module, model: nn.Module, groups: Groups, opts: pns.Optimizers,
        x: torch.Tensor, y: torch.Tensor, t: int, clip: float | None,
        autocast: contextlib.AbstractContextManager,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        step = pns.STEPS[self.options.mode]
        return step(net, pns.ParamGroups(**groups), opts, x, y, t, self.options.lam, clip,
                    autocast)  # fmt: skip


@dataclass(frozen=True)
class EMDOptions:
    sigma: float = 0.1  #: std of the target distribution around each label, on [0, 1]

    def __post_init__(self):
        _positive("sigma", self.sigma)


def emd(p: torch.Tensor, q: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth mover's distance between distributions over ordered bins ``[N, K]`` (per sample)."""
    cdf = torch.cumsum(p, dim=1) - torch.cumsum(q, dim=1)
    return cdf.abs().pow(r).mean(dim=1).pow(1.0 / r)


def gaussian_target(centres: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """A discretised Gaussian over the bins ``centres [K]`` around each label ``y [N]``
    (std ``sigma``), normalised: ``[N, K]``."""
    w = torch.exp(-0.5 * ((centres[None] - y[:, None]) / sigma) ** 2)
    return w / w.sum(dim=1, keepdim=True)


@OBJECTIVES.register("emd", about="NIMA's earth mover's distance (option sigma)")
class EMD(Objective):
    """NIMA's loss; the model provides ``distribution(x) -> [N, K]`` and ``centres [K]``."""

    Options = EMDOptions
    distributed = False

    def loss(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:  # fmt: skip
        if not hasattr(model, "distribution"):
            raise ValueError("objective 'emd' needs a model with score bins (e.g. nima)")
        target = gaussian_target(model.centres, y.float(), self.options.sigma)
        return emd(model.distribution(x), target).mean()


@dataclass(frozen=True)
class SATOptions:
    eps: float = 1 / 255  #: L-infinity budget of the training attack (pixel units)
    steps: int = 3  #: PGD steps per batch (step size eps / 2, random start)

    def __post_init__(self):
        _positive("eps", self.eps)
        check_image_eps(self.eps)  # a budget in grey levels by mistake (8 for 8/255)
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")


@OBJECTIVES.register("sat", about="training on PGD batches (options eps, steps)")
class AdversarialTraining(Objective):
    """Each batch replaced by its PGD version (the model in eval mode for the attack)."""

    Options = SATOptions
    distributed = False

    def adversarial_batch(self, model: nn.Module, x: torch.Tensor,
                          y: torch.Tensor) -> torch.Tensor:  # fmt: skip
        from cprl_fast import attacks

        o = self.options
        return attacks.pgd(model, x, y, eps=o.eps, steps=o.steps, alpha=o.eps / 2)

    def loss(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return _mse(model(self.adversarial_batch(model, x, y)), y)


@dataclass(frozen=True)
class NTOptions:
    weight: float = 1.0  #: weight of the input-gradient penalty

    def __post_init__(self):
        _positive("weight", self.weight)


def gradient_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i ||grad_x (h(x_i) - y_i)^2||_2^2``, differentiable (double backpropagation)."""
    xr = x.detach().requires_grad_(True)
    per_sample = (model(xr).float() - y) ** 2
    (g,) = torch.autograd.grad(per_sample.sum(), xr, create_graph=True)
    return g.flatten(1).pow(2).sum(dim=1).mean()


@OBJECTIVES.register("nt", about="MSE + input-gradient norm penalty (option weight)")
class GradientNormRegularisation(Objective):
    """MSE + weight * the input-gradient penalty (Liu et al., CVPR 2024)."""

    Options = NTOptions
    distributed = False

    def loss(self, net: nn.Module, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:  # fmt: skip
        return _mse(model(x), y) + self.options.weight * gradient_penalty(model, x, y)


def option_fields(name: str) -> dict[str, tuple[type, object]]:
    """``{option: (type, default)}`` of objective ``name``."""
    cls = OBJECTIVES.get(name).Options
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}


def make_objective(name: str, options: dict | None = None) -> Objective:
    """Objective ``name`` with ``options`` (unknown names and bad values raise ValueError)."""
    cls: Callable = OBJECTIVES.get(name)
    known = option_fields(name)
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        listed = ", ".join(known) or "none"
        raise ValueError(
            f"objective {name!r} has no option {', '.join(unknown)} (its options: {listed})"
        )
    for key, value in (options or {}).items():
        tp = known[key][0]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, tp) or (isinstance(value, bool) and tp is not bool):
            raise ValueError(f"option {key} of objective {name!r} must be {tp.__name__}, "
                             f"got {value!r}")  # fmt: skip
    return cls(cls.Options(**(options or {})))
