"""Small CNNs trained from scratch: the seed's Deep MNIST CNN, LeNet-5, and the twin's cucumber grader."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from training.models import register_model


def _flat_size(channels: int, input_size: tuple[int, int], downsample: int) -> int:
    h, w = input_size
    if h % downsample or w % downsample:
        raise ValueError(f"input size {h}x{w} must be divisible by {downsample} for this model")
    return channels * (h // downsample) * (w // downsample)


class DeepMnist(nn.Module):
    """TensorFlow's "Deep MNIST for Experts": 5x5 conv 32, pool, 5x5 conv 64, pool, FC 1024, dropout, FC."""

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(64, input_size, 4), 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) on 28x28 padded to the original 32x32, with ReLU and max pooling
    in place of the scaled tanh and trainable subsampling of the paper (the usual modern reading)."""

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        h, w = input_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),  # 28x28 + padding 2 = the paper's 32x32 input
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TwinCNN(nn.Module):
    """Grader for the sorter's item crops (48x144 RGB). The grade hangs on absolute length and thickness,
    so the head keeps the spatial layout (flatten of a 3x9 map) instead of pooling it away. Only Conv,
    BatchNorm, ReLU, Flatten and Linear: exports to ONNX and TensorRT without custom ops."""

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        widths = (16, 32, 64, 96)
        layers: list[nn.Module] = [_conv_bn(in_channels, widths[0], 1)]
        cin = widths[0]
        for cout in widths:
            layers += [_conv_bn(cin, cout, 2), _conv_bn(cout, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(_flat_size(cin, input_size, 16), num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model(
    "deep_mnist",
    "TensorFlow 'Deep MNIST for Experts' CNN (3.3M parameters)",
    default_input_size=(28, 28),
    head_prefixes=("classifier.",),
)
def deep_mnist(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **_: Any) -> nn.Module:
    return DeepMnist(num_classes, in_channels, input_size)


@register_model("lenet5", "LeNet-5 (61k parameters)", default_input_size=(28, 28), head_prefixes=("classifier.",))
def lenet5(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **_: Any) -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size)


@register_model(
    "twin_cnn",
    "small CNN for the sorter's 48x144 item crops",
    default_input_size=(48, 144),
    head_prefixes=("classifier.",),
)
def twin_cnn(*, num_classes: int, in_channels: int, input_size: tuple[int, int], **_: Any) -> nn.Module:
    return TwinCNN(num_classes, in_channels, input_size)
