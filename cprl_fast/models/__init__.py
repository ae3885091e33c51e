"""Quality models: :func:`cprl_resnet` (the paper's CPRL ResNet), the baselines, and
:func:`build`, the registry every command builds models from."""

from cprl_fast.models import baselines, dbcnn  # noqa: F401  (register the baselines)
from cprl_fast.models.cprl_resnet import (
    ARCHS,
    QualityResNet,
    convert_resnet,
    cprl_resnet,
    resnet_iqa,
)
from cprl_fast.models.registry import MODELS, build

__all__ = [
    "ARCHS",
    "MODELS",
    "QualityResNet",
    "build",
    "convert_resnet",
    "cprl_resnet",
    "resnet_iqa",
]
