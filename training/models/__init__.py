"""Model registry: every architecture the trainer can build, by name, with its typed metadata.

Modelled on torchvision's `models/_api.py`: a decorator registers a builder, duplicate names raise, and
`get_model(name, ...)` builds one. Builders take the number of classes, the input channels and (for models
whose head depends on it) the input size, so a checkpoint that records those three rebuilds the same module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from device.errors import EdgesortError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Builder
    description: str
    default_input_size: tuple[int, int] | None = None  # None: any size the data set gives
    # Normalisation the pretrained weights expect (overrides the data set's own when pretrained=True).
    pretrained_mean: tuple[float, ...] | None = None
    pretrained_std: tuple[float, ...] | None = None
    # Parameter-name prefixes of the classifier head (what --transfer linear trains).
    head_prefixes: tuple[str, ...] = field(default_factory=tuple)
    # Prefixes trained by --transfer top besides the head (the last stage(s) of the backbone).
    top_prefixes: tuple[str, ...] = field(default_factory=tuple)
    supports_pretrained: bool = False
    # (frozen trunk, trainable top) for --transfer top, so that the trunk's output can be computed once
    top_split: Callable[[nn.Module], tuple[nn.Module, nn.Module]] | None = None


_REGISTRY: dict[str, ModelInfo] = {}


class UnknownModelError(EdgesortError):
    pass


def register_model(name: str, description: str, **meta: Any) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"a model named '{name}' is already registered")
        _REGISTRY[name] = ModelInfo(name=name, builder=fn, description=description, **meta)
        return fn

    return wrap


def _load_builtin() -> None:
    # Importing the modules runs their @register_model decorators.
    from training.models import efficientnet, small, tv  # noqa: F401


def list_models() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_model_info(name: str) -> ModelInfo:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model '{name}'; known models: {', '.join(sorted(_REGISTRY))}") from None


def get_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    input_size: tuple[int, int] | None = None,
) -> nn.Module:
    info = get_model_info(name)
    if pretrained and not info.supports_pretrained:
        raise EdgesortError(f"model '{name}' has no pretrained weights; train it from scratch")
    size = tuple(input_size) if input_size else info.default_input_size
    return info.builder(num_classes=num_classes, in_channels=in_channels, pretrained=pretrained, input_size=size)
