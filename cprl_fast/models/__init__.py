"""Quality models. :func:`cprl_resnet` builds the CPRL ResNet of the paper."""

from cprl_fast.models.cprl_resnet import (
    ARCHS,
    QualityResNet,
    convert_resnet,
    cprl_resnet,
    resnet_iqa,
)

__all__ = ["ARCHS", "QualityResNet", "convert_resnet", "cprl_resnet", "resnet_iqa"]
