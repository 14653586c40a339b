"""Data sets for classification, picked by one spec string.

    mnist:PATH                              IDX files (train 55k / val 5k of the 60k set; test = t10k)
    grocery:PATH[?labels=coarse&produce=1]  Grocery Store data set list files (train, val; test is withheld)
    folder:PATH                             one folder per class (or PATH/{train,val,test}/<class>/)
    cucumber9:PATH                          CUCUMBER-9 python pickles (3 channels, or 9 for three views)
    twin:SEED[?train=N&val=N&test=N]        item crops made by the digital twin (device.sim.dataset)

Every source yields uint8 CHW image tensors and int labels; the transform (training/presets.py) turns them
into normalised float tensors. `build_dataset(spec, split)` without a transform gives the evaluation preset,
i.e. exactly what the exported model sees after the device's preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch
from torch.utils.data import Dataset

from device.errors import EdgesortError

SPLITS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(EdgesortError):
    """A data set is missing, broken, or its spec is malformed."""

    exit_code = 66  # EX_NOINPUT


@dataclass
class DataInfo:
    """What a model trained on this data needs to know (copied into the checkpoint)."""

    spec: str
    source: str
    labels: list[str]
    in_channels: int
    input_size: tuple[int, int]  # H, W the model sees
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_order: str = "RGB"  # "RGB" | "GRAY"; multi-view data keeps "RGB" per view
    resize: str = "stretch"
    augment: str = "none"  # preset name for training (training/presets.py)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


Transform = Callable[[torch.Tensor], torch.Tensor]


class ClassificationData(Dataset):
    """Base: `targets` (one int per sample) and `info`; subclasses provide `load(i) -> uint8 CHW tensor`."""

    def __init__(self, info: DataInfo, targets: list[int], split: str) -> None:
        self.info = info
        self.targets = targets
        self.split = split
        self.transform: Transform | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class ArrayData(ClassificationData):
    """Images held in memory as one uint8 tensor (N, C, H, W)."""

    def __init__(self, info: DataInfo, images: torch.Tensor, targets: torch.Tensor, split: str) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(
                f"{info.spec}: expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if len(images) != len(targets):
            raise DataError(f"{info.spec}: {len(images)} images but {len(targets)} labels")
        super().__init__(info, [int(t) for t in targets.tolist()], split)
        self.images = images

    def load(self, index: int) -> torch.Tensor:
        return self.images[index]


class FileData(ClassificationData):
    """Images decoded from files on each access (Pillow, as torchvision's ImageFolder)."""

    def __init__(self, info: DataInfo, paths: list[Path], targets: list[int], split: str) -> None:
        super().__init__(info, targets, split)
        self.paths = paths
        for p in paths:
            if not p.is_file():
                raise DataError(f"{info.spec}: image file {p} is missing")

    def load(self, index: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("L" if self.info.color_order == "GRAY" else "RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot decode image {path}: {exc}") from exc
        tensor = torch.from_numpy(array.copy())
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """'grocery:/d/gs?labels=coarse' -> ('grocery', '/d/gs', {'labels': 'coarse'})."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise DataError(f"data spec '{spec}' must look like KIND:PATH (kinds: {', '.join(SOURCES)})")
    target, _, query = rest.partition("?")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise DataError(f"data spec '{spec}' has a malformed option string '{query}'") from None
    return kind, target, options


def check_options(spec: str, options: dict[str, str], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise DataError(f"data spec '{spec}' has unknown option(s) {', '.join(sorted(unknown))} (known: {known})")


def option_int(spec: str, options: dict[str, str], key: str, default: int) -> int:
    try:
        return int(options.get(key, default))
    except ValueError:
        raise DataError(f"data spec '{spec}': option {key} must be an integer, not '{options[key]}'") from None


def option_float(spec: str, options: dict[str, str], key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except ValueError:
        raise DataError(f"data spec '{spec}': option {key} must be a number, not '{options[key]}'") from None


def option_bool(spec: str, options: dict[str, str], key: str) -> bool:
    value = options.get(key, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no", ""):
        raise DataError(f"data spec '{spec}': option {key} must be 0 or 1, not '{value}'")
    return value in ("1", "true", "yes", "")


Source = Callable[[str, str, dict[str, str], str], ClassificationData]
SOURCES = (
    "cucumber9",
    "folder",
    "grocery",
    "mnist",
    "twin",
)  # each a module here with build(spec, target, options, split)


def _source(kind: str, spec: str) -> Source:
    import importlib

    if kind not in SOURCES:
        raise DataError(f"unknown data kind '{kind}' in '{spec}'; known kinds: {', '.join(SOURCES)}")
    build: Source = importlib.import_module(f"training.data.{kind}").build
    return build


def build_dataset(spec: str, split: str, transform: Transform | None = None) -> ClassificationData:
    """Build one split ("train", "val" or "test") of the data set named by `spec`.

    Without `transform`, samples come out through the evaluation preset (resize + normalise)."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    kind, target, options = parse_spec(spec)
    ds = _source(kind, spec)(spec, target, options, split)
    if transform is None:
        from training.presets import eval_transform

        transform = eval_transform(ds.info)
    ds.transform = transform
    return ds


def resolve_path(spec: str, target: str) -> Path:
    path = Path(target).expanduser()
    if not path.exists():
        raise DataError(f"data spec '{spec}': {path} does not exist")
    return path
