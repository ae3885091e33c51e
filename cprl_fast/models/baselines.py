"""The paper's baselines (and one newer defence), built on the same torchvision ResNet and head.

- ``lwta``: stochastic local winner-takes-all activations (Panousis et al. 2021): every ReLU
  becomes competition within groups of U = 2 adjacent channels; training samples the winner with
  a Gumbel-softmax of learnable temperature (straight-through: a hard one-hot forward, the
  relaxed gradient backward), eval keeps the strongest unit (one winner per group). Chosen where
  the paper is silent: temperature initialised to 1, learned in log space per layer.
- ``denoise``: feature denoising (Xie et al. 2019): after each ResNet stage a block
  ``x + BN(conv1x1(NL(x)))`` with non-local means using the embedded-Gaussian affinity
  ``softmax(theta(x)^T phi(x))`` (theta, phi: 1x1 convs to C/2), its BN initialised to zero so
  the block is the identity at initialisation.
- ``sat``: smooth adversarial training (Xie et al. 2020): SiLU in place of every ReLU, and every
  training batch replaced by its PGD version (eps, 3 steps, random start) before the update.
- ``nt``: norm regularisation of the input gradient (Liu et al., CVPR 2024, "Defense against
  adversarial attacks on NR-IQA"): loss ``MSE + weight * mean ||grad_x L_i||_2^2`` (double
  backpropagation); chosen: weight 1.0, the gradient of the per-sample squared error.
- ``nima``: NIMA (Talebi & Milanfar 2018): the backbone with a softmax over 10 score bins and the
  EMD loss (r = 2); the score is the distribution's mean mapped to [0, 1]. The target
  distribution: a Gaussian over the bins centred on the MOS with standard deviation ``sigma``
  (0.1 on the [0, 1] scale; KonIQ's vote distributions are not used yet), normalised.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cprl_fast.models.cprl_resnet import QualityResNet, _backbone, cprl_resnet, resnet_iqa
from cprl_fast.models.registry import register

register("resnet")(lambda arch="resnet50", pretrained=None: resnet_iqa(arch, pretrained))
register("cprl")(cprl_resnet)


def mse_training_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.mean((model(x).float() - y) ** 2)


# --- LWTA ------------------------------------------------------------------------------------


class LWTA(nn.Module):
    """Local winner-takes-all over groups of ``U`` adjacent channels ``[N, C, H, W]``."""

    def __init__(self, units: int = 2):
        super().__init__()
        self.units = units
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c % self.units:
            raise ValueError(f"LWTA needs channels divisible by {self.units}, got {c}")
        groups = x.view(n, c // self.units, self.units, h, w)
        if self.training:
            u = torch.rand_like(groups).clamp(1e-9, 1 - 1e-7)
            gumbel = -torch.log(-torch.log(u))
            soft = F.softmax((groups + gumbel) / self.log_temperature.exp(), dim=2)
            hard = F.one_hot(soft.argmax(dim=2), self.units).movedim(-1, 2).to(x.dtype)
            mask = hard + soft - soft.detach()  # straight-through
        else:
            mask = F.one_hot(groups.argmax(dim=2), self.units).movedim(-1, 2).to(x.dtype)
        return (groups * mask).view(n, c, h, w)


def _replace_relus(module: nn.Module, make) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, make())
            count += 1
        else:
            count += _replace_relus(child, make)
    return count


@register("lwta")
def lwta(arch: str = "resnet50", pretrained=None, units: int = 2) -> QualityResNet:
    backbone = _backbone(arch, pretrained)
    _replace_relus(backbone, lambda: LWTA(units))
    return QualityResNet(backbone)


# --- feature denoising -------------------------------------------------------------------------


class DenoisingBlock(nn.Module):
    """``x + BN(conv1x1(non_local_means(x)))``, BN weight and bias zero: identity at init."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 2)
        self.theta = nn.Conv2d(channels, inner, 1, bias=False)
        self.phi = nn.Conv2d(channels, inner, 1, bias=False)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # [N, C', HW]
        phi = self.phi(x).flatten(2)
        affinity = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [N, HW, HW]
        denoised = (x.flatten(2) @ affinity.transpose(1, 2)).view(n, c, h, w)
        return x + self.bn(self.conv(denoised))


@register("denoise")
def denoise(arch: str = "resnet50", pretrained=None) -> QualityResNet:
    backbone = _backbone(arch, pretrained)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(backbone, stage)
        last = layer[-1]
        channels = last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features
        layer.append(DenoisingBlock(channels))
    return QualityResNet(backbone)


# --- SAT -------------------------------------------------------------------------------------


class AdversariallyTrained(QualityResNet):
    """A quality ResNet whose training batches are replaced by their PGD versions."""

    def __init__(self, backbone, eps: float, steps: int):
        super().__init__(backbone)
        self.eps, self.steps = eps, steps

    def adversarial_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from cprl_fast import attacks

        return attacks.pgd(self, x, y, eps=self.eps, steps=self.steps, alpha=self.eps / 2)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mse_training_loss(self, self.adversarial_batch(x, y), y)


@register("sat")
def sat(arch: str = "resnet50", pretrained=None, eps: float = 1 / 255, steps: int = 3):
    backbone = _backbone(arch, pretrained)
    _replace_relus(backbone, lambda: nn.SiLU(inplace=False))
    return AdversariallyTrained(backbone, eps, steps)


# --- NT --------------------------------------------------------------------------------------


class GradientNormRegularised(QualityResNet):
    """Quality ResNet trained with ``MSE + weight * mean_i ||grad_x (s_i - y_i)^2||^2``."""

    def __init__(self, backbone, weight: float):
        super().__init__(backbone)
        self.weight = weight

    def penalty(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xr = x.detach().requires_grad_(True)
        per_sample = (self(xr).float() - y) ** 2
        (g,) = torch.autograd.grad(per_sample.sum(), xr, create_graph=True)
        return g.flatten(1).pow(2).sum(dim=1).mean()

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mse_training_loss(self, x, y) + self.weight * self.penalty(x, y)


@register("nt")
def nt(arch: str = "resnet50", pretrained=None, weight: float = 1.0):
    return GradientNormRegularised(_backbone(arch, pretrained), weight)


# --- NIMA ------------------------------------------------------------------------------------


def emd(p: torch.Tensor, q: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth mover's distance between distributions over ordered bins ``[N, K]`` (per sample)."""
    cdf = torch.cumsum(p, dim=1) - torch.cumsum(q, dim=1)
    return cdf.abs().pow(r).mean(dim=1).pow(1.0 / r)


class NIMA(QualityResNet):
    """Softmax over ``bins`` score bins; score = the distribution's mean on [0, 1]."""

    def __init__(self, backbone, bins: int = 10, sigma: float = 0.1):
        super().__init__(backbone)
        self.head = nn.Linear(self.head.in_features, bins)
        self.register_buffer("centres", torch.linspace(0, 1, bins), persistent=False)
        self.sigma = sigma

    def distribution(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x)).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(x) @ self.centres

    def target_distribution(self, y: torch.Tensor) -> torch.Tensor:
        """A discretised Gaussian over the bins around each MOS (std ``sigma``), normalised."""
        w = torch.exp(-0.5 * ((self.centres[None] - y[:, None]) / self.sigma) ** 2)
        return w / w.sum(dim=1, keepdim=True)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return emd(self.distribution(x), self.target_distribution(y.float())).mean()


@register("nima")
def nima(arch: str = "resnet50", pretrained=None, bins: int = 10, sigma: float = 0.1):
    return NIMA(_backbone(arch, pretrained), bins, sigma)
