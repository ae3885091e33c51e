"""DBCNN (Zhang et al. 2018): a deep bilinear CNN for blind image quality assessment.

Two streams: S-CNN, a small CNN pre-trained to classify the synthetic distortion (type and level)
of an image, and VGG-16's convolutional features (ImageNet weights where given). Their last
feature maps are bilinearly pooled (``A B^T / (H W)``, A and B resized to the same grid), passed
through a signed square root and L2 normalisation, and a linear layer gives the quality (a
sigmoid maps it to [0, 1], as every model here).

The paper pre-trains S-CNN on 39 classes from Waterloo Exploration and PASCAL VOC images; we
pre-train it (:func:`pretrain_scnn`) on the built-in generator's classes instead: the five
distortion types x five levels plus "pristine" (26 classes), on random crops of the built-in
reference photographs. S-CNN's layout follows the paper's (3x3 convolutions with batch norm and
ReLU, widths 48-128, strided downsampling), with fewer layers.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cprl_fast.models.cprl_resnet import IMAGENET_MEAN, IMAGENET_STD
from cprl_fast.models.registry import register


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SCNN(nn.Module):
    """The synthetic-distortion stream; ``classify`` is its pre-training head."""

    def __init__(self, classes: int = 26):
        super().__init__()
        widths = [(3, 48, 1), (48, 48, 2), (48, 64, 1), (64, 64, 2), (64, 64, 1), (64, 128, 2),
                  (128, 128, 1), (128, 128, 2)]  # fmt: skip
        self.features = nn.Sequential(*[m for cin, cout, s in widths for m in _conv(cin, cout, s)])
        self.classify = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x).mean(dim=(2, 3)))


class DBCNN(nn.Module):
    """Images ``[N, 3, H, W]`` in [0, 1] -> quality ``[N]`` in [0, 1]."""

    def __init__(self, vgg_weights=None, scnn: SCNN | None = None):
        super().__init__()
        self.scnn = scnn or SCNN()
        vgg = torchvision.models.vgg16(weights=vgg_weights)
        self.vgg = vgg.features[:-1]  # up to conv5_3 + ReLU, without the last max-pool
        self.head = nn.Linear(128 * 512, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def bilinear(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        a, b = self.scnn(x), self.vgg(x)
        if a.shape[2:] != b.shape[2:]:
            a = F.interpolate(a, size=b.shape[2:], mode="bilinear", align_corners=False)
        n, hw = a.shape[0], b.shape[2] * b.shape[3]
        z = torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)).view(n, -1) / hw
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-8)
        return F.normalize(z, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must have shape [N, 3, H, W], got {list(x.shape)}")
        return torch.sigmoid(self.head(self.bilinear(x))).squeeze(1)


def distortion_batch(
    n: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random crops of the built-in references, each distorted by a random type and level
    (class ``1 + 5 * type + (level - 1)``) or left pristine (class 0)."""
    from cprl_fast.data.builtin import LEVELS, SCENES, distort, reference
    from cprl_fast.data.transforms import to_tensor

    kinds = list(LEVELS)
    xs, labels = [], []
    for _ in range(n):
        r = torch.randint(0, 10_000_000, (4,), generator=generator).tolist()
        img = reference(list(SCENES)[r[0] % len(SCENES)])
        label = r[1] % (1 + 5 * len(kinds))
        if label:
            kind, level = kinds[(label - 1) // 5], (label - 1) % 5 + 1
            img = distort(img, kind, level, seed=r[2])
        t = to_tensor(img)
        top, left = (r[3] % (t.shape[1] - size + 1)), (r[3] // 7 % (t.shape[2] - size + 1))
        xs.append(t[:, top : top + size, left : left + size])
        labels.append(label)
    return torch.stack(xs), torch.tensor(labels)


def pretrain_scnn(scnn: SCNN, steps: int = 200, batch: int = 32, size: int = 64,
                  lr: float = 1e-3, seed: int = 0) -> list[float]:  # fmt: skip
    """Trains S-CNN to classify the built-in distortions; returns the loss of every step."""
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(scnn.parameters(), lr=lr)
    scnn.train()
    losses = []
    for _ in tqdm(range(steps), desc="pre-training S-CNN", unit="step"):
        x, labels = distortion_batch(batch, size, g)
        opt.zero_grad()
        loss = F.cross_entropy(scnn.logits(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def load_vgg_features(vgg: nn.Sequential, state: object, name: str) -> None:
    """Loads the ``features.*`` tensors of ``state`` (a torchvision VGG-16 state dict, as its
    weights API gives and ``torch.save(vgg.state_dict())`` writes) into DBCNN's ``vgg``; a file
    of another layout, one missing any of those tensors or one of another shape is a
    ``ValueError`` naming ``name``: nothing loads in part, and never nothing at all unsaid."""
    state = state if isinstance(state, dict) else {}
    features = {k.removeprefix("features."): v for k, v in state.items()
                if isinstance(k, str) and k.startswith("features.")}  # fmt: skip
    own = vgg.state_dict()
    missing = [k for k in own if k not in features]
    wrong = [k for k in own if k in features and (not isinstance(features[k], torch.Tensor)
                                                 or features[k].shape != own[k].shape)]  # fmt: skip
    if missing or wrong:
        what = (f"it lacks features.{missing[0]} ({len(missing)} of VGG-16's {len(own)} "
                "feature tensors)" if missing else
                f"its features.{wrong[0]} is not a tensor of shape {list(own[wrong[0]].shape)}")
        raise ValueError(f"{name} are not VGG-16 weights DBCNN can use: {what}; give a "
                         "torchvision vgg16 state dict (keys features.N.weight/bias)")  # fmt: skip
    vgg.load_state_dict({k: features[k] for k in own})


@register("dbcnn", objective="regression", about="DBCNN: S-CNN and VGG-16, bilinear pooling")
def dbcnn(arch: str = "vgg16", pretrained=None, scnn_steps: int = 0) -> DBCNN:
    """DBCNN; ``pretrained``: a local VGG-16 state dict, or ``"imagenet"`` (torchvision's weights
    API, as for the ResNets); ``scnn_steps`` > 0 pre-trains
    S-CNN on the built-in distortions first (the paper's first stage)."""
    if arch not in ("vgg16", "resnet18", "resnet34", "resnet50", "resnet101"):
        raise ValueError(f"dbcnn uses VGG-16 (arch is ignored but must be valid), got {arch!r}")
    model = DBCNN()
    if pretrained == "imagenet":
        from cprl_fast.models.cprl_resnet import imagenet_state

        load_vgg_features(model.vgg, imagenet_state("vgg16"), "torchvision's ImageNet VGG-16")
    elif pretrained is not None:
        from cprl_fast.train.checkpoint import read_tensors

        state = read_tensors(pretrained, "pretrained weights file")
        load_vgg_features(model.vgg, state, f"pretrained weights {pretrained}")
    if scnn_steps > 0:
        pretrain_scnn(model.scnn, steps=scnn_steps)
    return model
