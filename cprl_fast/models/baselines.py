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
- ``sat``: smooth adversarial training (Xie et al. 2020): SiLU in place of every ReLU; trained
  with the ``sat`` objective (every batch replaced by its PGD version: eps, 3 steps, random
  start).
- ``nt``: norm regularisation of the input gradient (Liu et al., CVPR 2024, "Defense against
  adversarial attacks on NR-IQA"): the plain ResNet trained with the ``nt`` objective
  ``MSE + weight * mean ||grad_x L_i||_2^2`` (double backpropagation); chosen: weight 1.0, the
  gradient of the per-sample squared error.
- ``nima``: NIMA (Talebi & Milanfar 2018): the backbone with a softmax over 10 score bins,
  trained with the ``emd`` objective (r = 2); the score is the distribution's mean mapped to
  [0, 1]. The target distribution: a Gaussian over the bins centred on the MOS with standard
  deviation ``sigma`` (0.1 on the [0, 1] scale; KonIQ's vote distributions are not used yet).

The training objectives live in :mod:`cprl_fast.train.objectives`; each model names its default.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cprl_fast.models.cprl_resnet import QualityResNet, backbone_for, cprl_resnet, resnet_iqa
from cprl_fast.models.registry import register

register("resnet", objective="regression", about="the plain quality ResNet")(resnet_iqa)
register("cprl", objective="pns", about="ResNet with CA modules, the PNS game (the paper)")(
    cprl_resnet
)


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


@register("lwta", objective="regression", about="stochastic local winner-takes-all")
def lwta(arch: str = "resnet50", pretrained=None, units: int = 2, input_norm: str = "imagenet",
         patch: int | None = None) -> QualityResNet:  # fmt: skip
    backbone = backbone_for(arch, pretrained, input_norm)
    _replace_relus(backbone, lambda: LWTA(units))
    return QualityResNet(backbone, input_norm, patch)


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


@register("denoise", objective="regression", about="feature denoising blocks")
def denoise(arch: str = "resnet50", pretrained=None, input_norm: str = "imagenet",
            patch: int | None = None) -> QualityResNet:  # fmt: skip
    backbone = backbone_for(arch, pretrained, input_norm)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(backbone, stage)
        last = layer[-1]
        channels = last.bn3.num_features if hasattr(last, "bn3") else last.bn2.num_features
        layer.append(DenoisingBlock(channels))
    return QualityResNet(backbone, input_norm, patch)


# --- SAT and NT ------------------------------------------------------------------------------


@register("sat", objective="sat", about="smooth adversarial training (SiLU, PGD batches)")
def sat(arch: str = "resnet50", pretrained=None, input_norm: str = "imagenet",
        patch: int | None = None) -> QualityResNet:  # fmt: skip
    backbone = backbone_for(arch, pretrained, input_norm)
    _replace_relus(backbone, lambda: nn.SiLU(inplace=False))
    return QualityResNet(backbone, input_norm, patch)


register("nt", objective="nt", about="input-gradient norm regularisation")(resnet_iqa)


# --- NIMA ------------------------------------------------------------------------------------


class NIMA(QualityResNet):
    """Softmax over ``bins`` score bins; score = the distribution's mean on [0, 1]."""

    def __init__(self, backbone, bins: int = 10, input_norm: str = "imagenet",
                 patch: int | None = None):  # fmt: skip
        super().__init__(backbone, input_norm, patch)
        self.head = nn.Linear(self.head.in_features, bins)
        self.register_buffer("centres", torch.linspace(0, 1, bins), persistent=False)

    def distribution(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x)).float(), dim=1)

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[N, F]`` -> the mean of the bins' distribution ``[N]``."""
        return torch.softmax(self.head(f).float(), dim=1) @ self.centres


@register("nima", objective="emd", about="NIMA: score bins and the EMD loss")
def nima(arch: str = "resnet50", pretrained=None, bins: int = 10, input_norm: str = "imagenet",
         patch: int | None = None) -> NIMA:  # fmt: skip
    return NIMA(backbone_for(arch, pretrained, input_norm), bins, input_norm, patch)
