"""torchvision architectures trained from scratch (no weights are ever downloaded)."""

from __future__ import annotations

from typing import Any

from torch import nn

from training.models import register_model


@register_model(
    "resnet18",
    "torchvision ResNet-18, from scratch (11.2M parameters)",
    head_prefixes=("fc.",),
    top_prefixes=("layer4.",),
)
def resnet18(*, num_classes: int, in_channels: int, **_: Any) -> nn.Module:
    from torchvision.models import resnet18 as build

    model = build(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


@register_model(
    "mobilenet_v3_small",
    "torchvision MobileNetV3-Small, from scratch (1.5M parameters)",
    head_prefixes=("classifier.",),
    top_prefixes=("features.12.",),
)
def mobilenet_v3_small(*, num_classes: int, in_channels: int, **_: Any) -> nn.Module:
    from torchvision.models import mobilenet_v3_small as build

    model = build(weights=None, num_classes=num_classes)
    if in_channels != 3:
        first = model.features[0][0]
        model.features[0][0] = nn.Conv2d(
            in_channels, first.out_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
    return model
