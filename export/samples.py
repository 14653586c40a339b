"""Real images from a data set spec (training.data) for parity, calibration and the accuracy gate.

Samples are spread evenly over the split (not the first N), so every class of a sorted list file shows up.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from export.build import ImageSet
from export.errors import ExportError


def spread_indices(total: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    if count <= 0 or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def load_image_set(spec: str, split: str, count: int) -> ImageSet:
    """Up to `count` images of `split`, through the training evaluation preset (what the model sees)."""
    from training.data import build_dataset

    ds = build_dataset(spec, split)
    if len(ds) == 0:
        raise ExportError(f"the {split} split of '{spec}' holds no images")
    idx = spread_indices(len(ds), count)
    xs, ys = [], []
    for i in idx:
        x, y = ds[int(i)]
        xs.append(x.numpy().astype(np.float32, copy=False))
        ys.append(int(y))
    return ImageSet(np.stack(xs), np.asarray(ys, dtype=np.int64), f"{spec}:{split}[{len(idx)}]")


def iter_raw_images(spec: str, split: str, count: int = 0) -> Iterator[tuple[np.ndarray, int]]:
    """(BGR uint8 HxWx3 image, label) pairs as a camera would deliver them, for the device's preprocessor.

    `count` 0 means the whole split. Gray sources come out as three equal channels.
    """
    from training.data import build_dataset

    ds = build_dataset(spec, split)
    for i in spread_indices(len(ds), count or len(ds)):
        chw = ds.load(int(i)).numpy()
        hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
        if hwc.shape[2] == 1:
            hwc = np.repeat(hwc, 3, axis=2)
        elif hwc.shape[2] == 3:
            hwc = np.ascontiguousarray(hwc[:, :, ::-1])  # RGB -> BGR (the device's frame order)
        else:
            raise ExportError(f"'{spec}' has {hwc.shape[2]}-channel images; the device takes 1 or 3 channels")
        yield hwc, int(ds.targets[int(i)])
