"""The CA module of CPRL (docs/maths.md §1-2): a drop-in replacement for ``nn.ReLU``.

In the ``normal`` mode it computes ``relu(f * M)`` with the rank mask ``M`` (the fused
``rank_mask`` op). In the ``sf`` mode it returns the sufficiency intervention
``relu(FC_phi(f) * (1 - M) + f * M)``, in the ``nc`` mode the necessity intervention
``relu(FC_xi(f) * M + f * (1 - M))`` (the fused ``intervene`` op). ``FC_phi`` and ``FC_xi`` are
spectral-normalised 1x1 convolutions ``C -> C`` followed by a ReLU (Lipschitz constant <= 1).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cprl_fast import ops
from cprl_fast.checks import check_tau, check_temperature

MODES = ("normal", "sf", "nc")


def _intervention_net(channels: int) -> nn.Sequential:
    return nn.Sequential(spectral_norm(nn.Conv2d(channels, channels, 1)), nn.ReLU())


class CPRLActivation(nn.Module):
    """Channel activation with the rank mask, and its two intervention networks.

    Args:
        channels: ``C``, the channel count of the features it activates.
        b: initial value of the learnable offset (0.4 in the paper; 0.5 keeps every channel).
        temperature: ``T`` of the mask's sigmoid.
        rank: ``"hard"`` (the paper) or ``"soft"`` (a differentiable surrogate, for attacks
            that check for gradient masking).
        tau: soft-rank temperature (``None``: :data:`cprl_fast.ops.DEFAULT_TAU`).

    Shape: input ``[N, C, H, W]`` (pre-activation features), output the same.

    Example::

        >>> act = CPRLActivation(64)
        >>> act(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        b: float = 0.4,
        temperature: float = 1.0,
        rank: str = "hard",
        tau: float | None = None,
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self._temperature, self._rank, self._tau = 1.0, "hard", None
        self.temperature = temperature
        self.rank = rank
        self.tau = tau
        self.b = nn.Parameter(torch.tensor(float(b)))
        self.fc_phi = _intervention_net(channels)
        self.fc_xi = _intervention_net(channels)
        self.mode = "normal"

    # The mask's settings are checked when set, once, and kept in the op's own form
    # (``_op_args``: temperature, soft, tau as floats), so a forward does no Python work
    # beyond the op call (attacks that check for gradient masking switch ``rank`` and ``tau``).
    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        check_temperature(value)
        self._temperature = float(value)
        self._update_op_args()

    @property
    def rank(self) -> str:
        return self._rank

    @rank.setter
    def rank(self, value: str) -> None:
        if value not in ("hard", "soft"):
            raise ValueError(f"rank must be 'hard' or 'soft', got {value!r}")
        self._rank = value
        self._update_op_args()

    @property
    def tau(self) -> float | None:
        return self._tau

    @tau.setter
    def tau(self, value: float | None) -> None:
        if value is not None:
            check_tau(value)
        self._tau = None if value is None else float(value)
        self._update_op_args()

    def _update_op_args(self) -> None:
        soft = self._rank == "soft"
        tau = self._tau if soft and self._tau is not None else ops.DEFAULT_TAU
        self._op_args = (self._temperature, soft, tau)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if isinstance(f, torch.fx.Proxy):
            return self._symbolic(f)
        if f.dim() != 4 or f.shape[1] != self.channels:
            raise ValueError(
                f"CPRLActivation({self.channels}) expects [N, {self.channels}, H, W], "
                f"got {list(f.shape)}"
            )
        # b goes in unchanged (float32): the op computes the mask in float32, so under bf16
        # autocast the threshold is not rounded to the features' dtype. Read from
        # _parameters: Module.__getattr__ costs host time on every call (host_overhead.py);
        # a parametrization (torch.nn.utils.parametrize) moves b out of it.
        b = self._parameters.get("b")
        if b is None:
            b = self.b
        if self.mode == "normal":
            return ops.op_for("ca_activation", f.device)(f, b, *self._op_args)
        _, mask = ops.op_for("rank_mask", f.device)(f, b, *self._op_args)
        net = self.fc_phi if self.mode == "sf" else self.fc_xi
        return ops.op_for("intervene", f.device)(f, net(f), mask, self.mode)

    def _symbolic(self, f: torch.fx.Proxy) -> torch.fx.Proxy:
        """The forward under torch.fx's symbolic tracing (torchvision's feature extraction):
        no Python check of a traced value, and the dispatcher's ops in the graph, which run
        each device's native kernels."""
        if self.mode == "normal":
            return torch.ops.cprl_fast.ca_activation(f, self.b, *self._op_args)
        _, mask = torch.ops.cprl_fast.rank_mask(f, self.b, *self._op_args)
        net = self.fc_phi if self.mode == "sf" else self.fc_xi
        return torch.ops.cprl_fast.intervene(f, net(f), mask, self.mode)

    # Pickling (torch.save(model), multiprocessing): torch refuses to pickle a module with
    # parametrizations (the intervention networks' spectral norm), so each network travels as
    # its state dict, which parameters take gradients and which modules are in training mode,
    # and is rebuilt on the same device, in the same dtype. Copies keep Python's defaults (a
    # shallow copy shares the networks; a deep copy, which the parametrizations support,
    # copies them).
    _NETS = ("fc_phi", "fc_xi")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_modules"] = {k: v for k, v in self._modules.items() if k not in self._NETS}
        state["_nets"] = {name: (net.state_dict(),
                                 {k: p.requires_grad for k, p in net.named_parameters()},
                                 [m.training for m in net.modules()])
                          for name, net in ((n, getattr(self, n)) for n in self._NETS)}  # fmt: skip
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        nets = state.pop("_nets", None)
        super().__setstate__(state)
        for name, (weights, grads, training) in (nets or {}).items():
            net = _intervention_net(self.channels)
            net.load_state_dict(weights)
            ref = next(iter(weights.values()))
            net.to(ref.device, ref.dtype)
            for k, p in net.named_parameters():
                p.requires_grad_(grads[k])
            for m, mode in zip(net.modules(), training, strict=True):
                m.training = mode
            self._modules[name] = net

    def __copy__(self) -> CPRLActivation:
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> CPRLActivation:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, b={float(self.b.detach()):.3g}, temperature={self.temperature:g}, "
            f"rank={self.rank!r}, mode={self.mode!r}"
        )


@contextlib.contextmanager
def intervention(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Switches every :class:`CPRLActivation` of ``model`` to ``mode`` (``"sf"``, ``"nc"`` or
    ``"normal"``) inside the ``with`` block, restoring each one's mode afterwards."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    modules = [m for m in model.modules() if isinstance(m, CPRLActivation)]
    if not modules:
        raise ValueError("the model has no CPRLActivation module")
    previous = [m.mode for m in modules]
    try:
        for m in modules:
            m.set_mode(mode)
        yield model
    finally:
        for m, p in zip(modules, previous, strict=True):
            m.mode = p
