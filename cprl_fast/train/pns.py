"""One iteration of the min-max PNS game (docs/maths.md §4, Algorithm 1).

Parameter groups: ``theta`` (backbone, head and every ``b``), ``phi`` (every ``FC_phi``) and
``xi`` (every ``FC_xi``), each with its own optimiser.

Faithful order (the default), on a batch ``(x, y)`` at iteration ``t``:
  1. ``y_hat = model(x)``, ``L_reg = mse(y_hat, y)``; theta steps down ``L_reg``;
     ``y_bar = y_hat.detach()``.
  2. even ``t`` (SF): ``L_SF = mse(model_sf(x), y_bar)``; phi steps UP ``L_SF``; recompute with
     the new phi; theta steps down ``lambda * L_SF``.
     odd ``t`` (NC): ``L_NC = mse(model_nc(x), y_bar)``; xi steps DOWN ``L_NC`` (xi maximises
     ``R = L_SF - L_NC``); recompute; theta steps UP ``lambda * L_NC``.
Parameters that a step does not update get no gradient in it (saves their backward work).

Both orders compute the part of the network before the first CA module (its *prefix*: the
images and theta alone decide it) once where two forwards would compute it alike: in fast mode
the normal and the intervened forward share it (and its backward), in faithful mode steps 2a
and 2b (phi is not in it, and theta does not change in between). The batch-norm layers in it
then count the batch twice in their running statistics, as the two forwards did, so the
losses, updates and buffers are today's up to the order of floating-point sums
(``share_prefix=False`` computes them the old way; tests/test_train.py compares the two).

Fast mode (named ``fast``, never the default): one backward per iteration. The normal and the
intervened forward share it: ``L = L_reg + lambda * L_SF`` (or ``L_reg - lambda * L_NC``), and
the gradient of phi (xi) is reversed and divided by lambda, so phi still ascends ``L_SF`` and xi
still descends ``L_NC``; all three optimisers then step once. It differs from the faithful
order in that every update uses the parameters from before the iteration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cprl_fast.nn import CPRLActivation, intervention


@dataclass
class ParamGroups:
    theta: list[nn.Parameter]
    phi: list[nn.Parameter]
    xi: list[nn.Parameter]


def param_groups(model: nn.Module) -> ParamGroups:
    """Splits the trainable parameters of a CPRL model into theta, phi and xi."""
    phi, xi = [], []
    for m in model.modules():
        if isinstance(m, CPRLActivation):
            phi += list(m.fc_phi.parameters())
            xi += list(m.fc_xi.parameters())
    if not phi:
        raise ValueError("the model has no CPRLActivation module: nothing to intervene on")
    taken = {id(p) for p in phi + xi}
    theta = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    return ParamGroups(theta, phi, xi)


@contextlib.contextmanager
def only_grads_for(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Inside: only ``params`` require grad (the others' weight gradients are not computed)."""
    keep = {id(p) for p in params}
    changed = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def _can_share(model: nn.Module) -> bool:
    """Whether ``model`` splits at its first CA module (``prefix``/``suffix``) and every batch
    norm has a momentum (for :func:`_counted_twice`)."""
    if hasattr(model, "_orig_mod"):  # torch.compile'd: keep the compiled forward
        return False
    if not (hasattr(model, "prefix") and hasattr(model, "has_ca") and model.has_ca()):
        return False
    return all(m.momentum is not None for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))  # fmt: skip


@contextlib.contextmanager
def _counted_twice(model: nn.Module) -> Iterator[None]:
    """The batch norms that run inside update their running statistics once more with the same
    batch statistics, as a second forward of the same batch through them would:
    ``r2 = (1 - m) r1 + m s`` with ``s`` recovered from ``r1 = (1 - m) r0 + m s``. Which ones
    ran is seen by forward hooks, not by reading ``num_batches_tracked`` (a host
    synchronisation on a GPU)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.training and m.track_running_stats]  # fmt: skip
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, _i, _o: ran.add(id(mod))) for m in bns]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for m, (mean0, var0) in zip(bns, before, strict=True):
            if id(m) not in ran:
                continue  # not in the prefix
            mom = float(m.momentum)
            # through .data: autograd saved these buffers with the batch norm's inputs (its
            # training-mode backward reads the batch statistics, not them), and a tracked
            # in-place change would fail the version check of the coming backward
            m.running_mean.data.mul_(2 - mom).sub_(mean0, alpha=1 - mom)
            m.running_var.data.mul_(2 - mom).sub_(var0, alpha=1 - mom)
            m.num_batches_tracked.data.add_(1)


#: The optimisers of one PNS iteration by parameter group: ``theta``, ``phi``, ``xi``.
Optimizers = dict[str, torch.optim.Optimizer]


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean((a.float() - b.float()) ** 2)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list[nn.Parameter],
          clip: float | None) -> None:  # fmt: skip
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def theta_regression_step(
    model: nn.Module, groups: ParamGroups, opts: Optimizers, x: torch.Tensor, y: torch.Tensor,
    clip: float | None = None, cast: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Step 1: theta descends ``L_reg``; returns ``(L_reg, y_hat.detach())``."""
    with cast or contextlib.nullcontext():
        y_hat = model(x)
        l_reg = _mse(y_hat, y)
    _step(opts["theta"], l_reg, groups.theta, clip)
    return l_reg.detach(), y_hat.detach()


def intervention_net_step(
    model: nn.Module, groups: ParamGroups, opts: Optimizers, x: torch.Tensor,
    y_bar: torch.Tensor, mode: str, clip: float | None = None,
    cast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:  # fmt: skip
    """Step 2a: phi ascends ``L_SF`` (mode ``sf``) or xi descends ``L_NC`` (mode ``nc``);
    theta gets no gradient. Returns the loss before the update."""
    params, opt = (groups.phi, opts["phi"]) if mode == "sf" else (groups.xi, opts["xi"])
    with only_grads_for(model, params), intervention(model, mode), cast or contextlib.nullcontext():
        loss = _mse(model(x), y_bar)
    _step(opt, -loss if mode == "sf" else loss, params, clip)
    return loss.detach()


def theta_intervention_step(
    model: nn.Module, groups: ParamGroups, opts: Optimizers, x: torch.Tensor,
    y_bar: torch.Tensor, mode: str, lam: float, clip: float | None = None,
    cast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:  # fmt: skip
    """Step 2b, with the updated phi/xi: theta descends ``lambda * L_SF`` or ascends
    ``lambda * L_NC``; phi and xi get no gradient. Returns the loss before the update."""
    with (
        only_grads_for(model, groups.theta),
        intervention(model, mode),
        cast or contextlib.nullcontext(),
    ):
        loss = _mse(model(x), y_bar)
    _step(opts["theta"], lam * loss if mode == "sf" else -lam * loss, groups.theta, clip)
    return loss.detach()


def faithful_step(
    model: nn.Module, groups: ParamGroups, opts: Optimizers,
    x: torch.Tensor, y: torch.Tensor, t: int, lam: float, clip: float | None = None,
    autocast: contextlib.AbstractContextManager | None = None, share_prefix: bool = True,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One faithful PNS iteration; returns ``{"l_reg", "l_sf" or "l_nc"}`` (before the
    updates) as detached 0-d tensors on the model's device: the step reads nothing back to the
    host, so on a GPU it never waits for the device (the trainer reads the losses when it logs)."""
    mode = "sf" if t % 2 == 0 else "nc"
    l_reg, y_bar = theta_regression_step(model, groups, opts, x, y, clip, autocast)
    if not (share_prefix and _can_share(model)):
        l_int = intervention_net_step(model, groups, opts, x, y_bar, mode, clip, autocast)
        theta_intervention_step(model, groups, opts, x, y_bar, mode, lam, clip, autocast)
        return {"l_reg": l_reg.detach(), f"l_{mode}": l_int.detach()}
    def cast() -> contextlib.AbstractContextManager:
        return autocast or contextlib.nullcontext()

    with only_grads_for(model, groups.theta), _counted_twice(model), cast():
        z = model.prefix(x)  # steps 2a and 2b alike: theta changes only after 2b's backward
    params, opt = (groups.phi, opts["phi"]) if mode == "sf" else (groups.xi, opts["xi"])
    with only_grads_for(model, params), intervention(model, mode), cast():
        l_int = _mse(model.suffix(z.detach()), y_bar)
    _step(opt, -l_int if mode == "sf" else l_int, params, clip)
    with only_grads_for(model, groups.theta), intervention(model, mode), cast():
        loss = _mse(model.suffix(z), y_bar)
    _step(opts["theta"], lam * loss if mode == "sf" else -lam * loss, groups.theta, clip)
    return {"l_reg": l_reg.detach(), f"l_{mode}": l_int.detach()}


def fast_step(
    model: nn.Module, groups: ParamGroups, opts: Optimizers,
    x: torch.Tensor, y: torch.Tensor, t: int, lam: float, clip: float | None = None,
    autocast: contextlib.AbstractContextManager | None = None, share_prefix: bool = True,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One PNS iteration with a single backward pass (see the module docstring); returns the
    losses as :func:`faithful_step` does."""
    cast = autocast or contextlib.nullcontext()
    sf = t % 2 == 0
    mode, net_params = ("sf", groups.phi) if sf else ("nc", groups.xi)
    for opt in opts.values():
        opt.zero_grad(set_to_none=True)
    share = share_prefix and _can_share(model)
    with cast:
        if share:
            with _counted_twice(model):
                z = model.prefix(x)
            y_hat = model.suffix(z)
        else:
            y_hat = model(x)
        l_reg = _mse(y_hat, y)
        with intervention(model, mode):
            l_int = _mse(model.suffix(z) if share else model(x), y_hat.detach())
    total = l_reg + lam * l_int if sf else l_reg - lam * l_int
    total.backward()
    for p in net_params:  # gradient reversal for the maximiser / minimiser of the risk
        if p.grad is not None:
            p.grad.mul_(-1.0 / lam)
    for name in ("theta", "phi" if sf else "xi"):
        params = getattr(groups, name)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opts[name].step()
    return {"l_reg": l_reg.detach(), f"l_{mode}": l_int.detach()}


STEPS = {"faithful": faithful_step, "fast": fast_step}
