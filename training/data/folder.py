"""Folders of images, one folder per class.

Either PATH/{train,val[,test]}/<class>/* (the splits as given) or PATH/<class>/* split deterministically per
class (options val=0.1, test=0.1, seed=0). Class names are the folder names, sorted (as torchvision's
ImageFolder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassificationData,
    DataError,
    DataInfo,
    FileData,
    check_options,
    option_float,
    option_int,
    resolve_path,
)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _listing(directory: Path, classes: list[str]) -> list[tuple[Path, int]]:
    from torchvision.datasets.folder import make_dataset

    index = {c: i for i, c in enumerate(classes)}
    items = make_dataset(str(directory), index, extensions=EXTENSIONS, allow_empty=True)
    return [(Path(p), t) for p, t in items]


def build(spec: str, target: str, options: dict[str, str], split: str) -> ClassificationData:
    check_options(spec, options, {"val", "test", "seed"})
    root = resolve_path(spec, target)
    if not root.is_dir():
        raise DataError(f"data spec '{spec}': {root} is not a folder")
    from torchvision.datasets.folder import find_classes

    presplit = (root / "train").is_dir()
    try:
        classes, _ = find_classes(str(root / "train" if presplit else root))
    except FileNotFoundError as exc:
        raise DataError(f"data spec '{spec}': {exc}") from None
    if presplit:
        if split != "train" and not (root / split).is_dir():
            raise DataError(f"data spec '{spec}': there is no {split} folder {root / split}")
        items = _listing(root / split, classes)
    else:
        val, test = option_float(spec, options, "val", 0.1), option_float(spec, options, "test", 0.1)
        if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
            raise DataError(f"data spec '{spec}': val and test must be fractions that leave some training data")
        if split == "test" and test == 0:
            raise DataError(f"data spec '{spec}': test=0 leaves no test split")
        rng = np.random.default_rng(option_int(spec, options, "seed", 0))
        everything = _listing(root, classes)
        items = []
        for label in range(len(classes)):
            own = sorted(p for p, t in everything if t == label)
            order = rng.permutation(len(own))
            n_val, n_test = round(val * len(own)), round(test * len(own))
            picks = {
                "val": order[:n_val],
                "test": order[n_val : n_val + n_test],
                "train": order[n_val + n_test :],
            }
            items += [(own[i], label) for i in sorted(picks[split])]
    if not items and split == "train":
        raise DataError(f"data spec '{spec}': no images ({', '.join(EXTENSIONS)}) found under {root}")
    info = DataInfo(
        spec=spec,
        source="folder",
        labels=list(classes),
        in_channels=3,
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        color_order="RGB",
        augment="photos",
        counts={split: len(items)},
    )
    return FileData(info, [p for p, _ in items], [t for _, t in items], split)
