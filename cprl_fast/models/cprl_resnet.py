"""The CPRL ResNet (docs/maths.md §3): a torchvision ResNet whose chosen blocks end in a CA module,
with the quality head ``y = sigmoid(linear(GAP(features)))``.

torchvision's blocks call one ``self.relu`` module several times, so the CA module cannot simply
replace it: :func:`convert_resnet` changes the class of each chosen block to a subclass whose
``forward`` is the original one with only the final activation (after the residual sum)
replaced by ``self.ca``, which ranks the pre-activation features. State-dict keys of the
backbone are unchanged (plus ``ca.*``), so torchvision checkpoints load before or after.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from cprl_fast.models.inputs import LocalContrastNorm, check_input_norm, tiles
from cprl_fast.nn import CPRLActivation

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
STAGES = ("layer1", "layer2", "layer3", "layer4")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CABasicBlock(BasicBlock):
    """A BasicBlock whose final ReLU is the CA module ``self.ca``."""

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its CA module (what ``self.ca`` is applied to)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.pre_activation(x))


class CABottleneck(Bottleneck):
    """A Bottleneck whose final ReLU is the CA module ``self.ca``."""

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its CA module (what ``self.ca`` is applied to)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)) + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ca(self.pre_activation(x))


def _blocks(resnet: ResNet, placement: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """The blocks a placement names: ``"last"`` (the last block of each stage, the paper's),
    ``"all"``, or names such as ``["layer3.5", "layer4.2"]`` or ``["layer4"]`` (its last block)."""
    if placement == "last":
        names = [f"{s}.{len(getattr(resnet, s)) - 1}" for s in STAGES]
    elif placement == "all":
        names = [f"{s}.{i}" for s in STAGES for i in range(len(getattr(resnet, s)))]
    elif isinstance(placement, str):
        raise ValueError(
            f"placement must be 'last', 'all' or a list of block names, got {placement!r}"
        )
    else:
        names = []
        for p in placement:
            stage, _, index = p.partition(".")
            if stage not in STAGES:
                raise ValueError(f"placement entry {p!r}: stage must be one of {STAGES}")
            n = len(getattr(resnet, stage))
            i = n - 1 if index == "" else int(index)
            if not 0 <= i < n:
                raise ValueError(f"placement entry {p!r}: {stage} has blocks 0..{n - 1}")
            names.append(f"{stage}.{i}")
    return [(n, resnet.get_submodule(n)) for n in names]


def convert_resnet(
    resnet: ResNet, placement: str | Sequence[str] = "last", **ca_options
) -> list[str]:
    """Turns the final activation of the chosen blocks of ``resnet`` into CA modules, in place.

    Returns the names of the converted blocks. ``ca_options`` go to :class:`CPRLActivation`
    (``b``, ``temperature``, ``rank``, ``tau``); each CA module is made on its block's device and
    in its dtype (a float64 or bfloat16 model gets CA modules of its own dtype)."""
    if not isinstance(resnet, ResNet):
        raise TypeError(f"resnet must be a torchvision ResNet, got {type(resnet).__name__}")
    # every block checked, and its CA module made (bad ca_options refused), before any block
    # changes: a refusal leaves the model as it was
    plan: dict[str, tuple[nn.Module, type, CPRLActivation]] = {}
    for name, block in _blocks(resnet, placement):
        if isinstance(block, (CABasicBlock, CABottleneck)):
            raise ValueError(f"block {name} already ends in a CA module")
        if name in plan:
            raise ValueError(f"placement names block {name} twice")
        if isinstance(block, Bottleneck):
            kind, channels = CABottleneck, block.bn3.num_features
        elif isinstance(block, BasicBlock):
            kind, channels = CABasicBlock, block.bn2.num_features
        else:
            raise TypeError(f"block {name} is a {type(block).__name__}, not a torchvision block")
        # on the block's device and in its dtype, as if it had been there when the model moved
        like = block.conv1.weight
        ca = CPRLActivation(channels, **ca_options).to(like.device, like.dtype)
        plan[name] = block, kind, ca
    for block, kind, ca in plan.values():
        block.__class__, block.ca = kind, ca
    return list(plan)


def imagenet_state(arch: str) -> dict:
    """torchvision's default ImageNet weights of ``arch`` (its weights API): read from torch's
    cache (``$TORCH_HOME/hub/checkpoints``), downloaded there where the network allows; offline,
    an error naming the file to put there."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True)
    except OSError as err:  # URLError and socket errors are OSErrors
        raise FileNotFoundError(
            f"ImageNet weights of {arch} are not in torch's cache and could not be downloaded "
            f"({err}): put {weights.url} at {cached}"
        ) from err


def _load_pretrained(resnet: ResNet, pretrained, arch: str, input_norm: str | None = None) -> None:
    if pretrained is None:
        return
    if pretrained == "imagenet":
        state = imagenet_state(arch)
    elif isinstance(pretrained, (str, Path)):
        from cprl_fast.train.checkpoint import read_tensors

        path = Path(pretrained)
        state = read_tensors(path, "pretrained weights file")
        meta = state.get("meta") if isinstance(state, dict) else None
        made_for = meta.get("arch") if isinstance(meta, dict) else None
        if made_for not in (None, arch):  # e.g. cprl-fast pretrain's file records its arch
            raise ValueError(f"pretrained weights {path} are for {made_for}, not {arch}: use "
                             f"arch {made_for}, or pretrain for {arch}")  # fmt: skip
        # and what its inputs were normalised as: other inputs would reach features learned
        # for those, and train a worse model without a word
        norm = meta.get("input_norm") if isinstance(meta, dict) else None
        if input_norm is not None and norm not in (None, input_norm):
            raise ValueError(f"pretrained weights {path} were pretrained on input_norm "
                             f"{norm!r}, this model reads {input_norm!r}: use input_norm "
                             f"{norm!r}, or pretrain with {input_norm!r}")  # fmt: skip
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    else:  # a torchvision WeightsEnum (downloads where online)
        state = pretrained.get_state_dict(progress=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = resnet.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError(f"pretrained weights do not fit this {arch}: {wrong[0]} is "
                         f"{list(state[wrong[0]].shape)}, the model's "
                         f"{list(own[wrong[0]].shape)} ({len(wrong)} tensors differ)")  # fmt: skip
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights do not fit this ResNet: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


class QualityResNet(nn.Module):
    """Input normalisation -> ResNet backbone -> GAP -> linear -> sigmoid.

    Input: images ``[N, 3, H, W]`` in ``[0, 1]``; output: quality ``[N]`` in ``[0, 1]``.
    ``input_norm`` and ``patch`` are described in :mod:`cprl_fast.models.inputs`: with
    ``patch``, an image larger than ``patch`` px is scored as the mean of its tiles' scores.
    """

    def __init__(self, backbone: ResNet, input_norm: str = "imagenet", patch: int | None = None):
        super().__init__()
        check_input_norm(input_norm)
        in_features = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.lcn = LocalContrastNorm() if input_norm == "lcn" else None
        self.patch = patch
        self.backbone = backbone
        self.head = nn.Linear(in_features, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` -> what the backbone reads (same shape)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape [N, 3, H, W], got {list(x.shape)}")
        if self.lcn is not None:
            x = self.lcn(x)
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` -> pooled backbone features ``[N, F]`` (no tiling)."""
        return self.backbone(self.normalize(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` -> quality ``[N]``, each image at once (no tiling)."""
        return self.from_features(self.features(x))

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[N, F]`` -> quality ``[N]`` (the head)."""
        return torch.sigmoid(self.head(f)).squeeze(1)

    def tiled(self, x: torch.Tensor) -> bool:
        """Whether images ``x`` ``[N, 3, H, W]`` are scored by ``patch``-px tiles (the mean
        of the tiles' scores, :func:`~cprl_fast.models.inputs.tiles`) rather than whole."""
        return self.patch is not None and max(x.shape[-2:]) > self.patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tiled(x):
            return self.score(x)
        if x.dim() != 4:
            raise ValueError(f"images must have shape [N, 3, H, W], got {list(x.shape)}")
        return self.score(tiles(x, self.patch)).view(x.shape[0], -1).mean(1)

    def _first_ca(self) -> tuple[int, int] | None:
        for s, stage in enumerate(STAGES):
            for i, block in enumerate(getattr(self.backbone, stage)):
                if isinstance(block, (CABasicBlock, CABottleneck)):
                    return s, i
        return None

    def has_ca(self) -> bool:
        """Whether a block of the backbone has a CA module (then :meth:`prefix` exists)."""
        return self._first_ca() is not None

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` -> the input of the first CA module ``[N, C, h, w]``: all
        that the normal and the intervened forwards share (it depends on the images and the
        backbone's weights alone). ``self.suffix(self.prefix(x)) == self(x)``."""
        where = self._first_ca()
        if where is None:
            raise ValueError("the model has no CA module: it has no prefix to share")
        if self.tiled(x):
            raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} px are scored by tiles of "
                             f"patch={self.patch} px: the prefix takes crops of at most that size "
                             "(train with train_crop <= patch)")  # fmt: skip
        b = self.backbone
        z = b.maxpool(b.relu(b.bn1(b.conv1(self.normalize(x)))))
        for s in range(where[0]):
            z = getattr(b, STAGES[s])(z)
        stage = getattr(b, STAGES[where[0]])
        for i in range(where[1]):
            z = stage[i](z)
        return stage[where[1]].pre_activation(z)

    def suffix(self, z: torch.Tensor) -> torch.Tensor:
        """The rest of the forward after :meth:`prefix`: its output -> scores ``[N]``."""
        s, i = self._first_ca()
        b = self.backbone
        stage = getattr(b, STAGES[s])
        z = stage[i].ca(z)
        for block in list(stage)[i + 1 :]:
            z = block(z)
        for name in STAGES[s + 1 :]:
            z = getattr(b, name)(z)
        return self.from_features(b.fc(torch.flatten(b.avgpool(z), 1)))


def backbone_for(arch: str, pretrained, input_norm: str | None = None) -> ResNet:
    """The torchvision ResNet ``arch`` (a name of :data:`ARCHS`), randomly initialised, then
    ``pretrained``'s weights loaded where given (see :func:`cprl_resnet`); a weights file that
    records the arch or the ``input_norm`` it was pretrained with (``cprl-fast pretrain``'s)
    must match this model's."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    resnet = getattr(torchvision.models, arch)(weights=None)
    _load_pretrained(resnet, pretrained, arch, input_norm)
    return resnet


def resnet_iqa(arch: str = "resnet50", pretrained=None, input_norm: str = "imagenet",
               patch: int | None = None) -> QualityResNet:  # fmt: skip
    """The plain ResNet quality model (the paper's "ResNet" baseline); ``input_norm`` and
    ``patch``: :mod:`cprl_fast.models.inputs`."""
    return QualityResNet(backbone_for(arch, pretrained, input_norm), input_norm, patch)


def cprl_resnet(
    arch: str = "resnet50",
    placement: str | Sequence[str] = "last",
    pretrained=None,
    b: float = 0.4,
    temperature: float = 1.0,
    rank: str = "hard",
    tau: float | None = None,
    input_norm: str = "imagenet",
    patch: int | None = None,
) -> QualityResNet:
    """The CPRL quality model: a ResNet with CA modules at ``placement`` and the quality head.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        placement: ``"last"`` (the last block of each stage: 4 CA modules, C = 256, 512, 1024,
            2048 for ResNet-50), ``"all"``, or a list of block names (``"layer4.2"``).
        pretrained: ``"imagenet"`` (torchvision's default ImageNet weights of ``arch``, from
            torch's cache or downloaded, :func:`imagenet_state`), a local state-dict file of the
            torchvision ResNet, or a torchvision weights enum; its ``fc`` is not used.
        b, temperature, rank, tau: of every :class:`CPRLActivation` (initial offset, mask
            temperature, ``"hard"`` or ``"soft"`` rank, soft-rank temperature).
        input_norm, patch: :mod:`cprl_fast.models.inputs`.
    """
    backbone = backbone_for(arch, pretrained, input_norm)
    convert_resnet(backbone, placement, b=b, temperature=temperature, rank=rank, tau=tau)
    return QualityResNet(backbone, input_norm, patch)
