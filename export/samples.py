"""Real images from a data set spec (training.data) for parity, calibration and the accuracy gate.

Images are read raw and go through the device's own preprocessing (device.preprocess.Preprocessor with the
bundle's input spec: the checkpoint's size, mean and std), so the checks see what the device will see. The data
source's default transform is not used: it normalises with the data set's statistics, while a checkpoint
fine-tuned from pretrained weights carries the statistics of those weights (EfficientNet-Lite: 127/128).
Samples are spread evenly over the split (not the first N), so every class of a sorted list file shows up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from export.build import ImageSet
from export.errors import ExportError

if TYPE_CHECKING:
    from device.bundle import InputSpec


def spread_indices(total: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    if count <= 0 or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def load_image_set(
    spec: str, split: str, count: int, input_spec: InputSpec, labels: tuple[str, ...] | None = None
) -> ImageSet:
    """Up to `count` images of `split` (0 = all), preprocessed as the device does for `input_spec`.

    With `labels` (the model's), the data set's class indexes are mapped to the model's by name; without,
    labels are -1 (calibration images need none, and may come from another data set).
    """
    from device.preprocess import Preprocessor
    from training.data import build_dataset

    mapping = None
    if labels is not None:
        from export.evaluate import label_map

        mapping = label_map(labels, list(build_dataset(spec, split).info.labels))
    pre = Preprocessor(input_spec, max_batch=1)
    xs, ys = [], []
    for image, y in iter_raw_images(spec, split, count):
        xs.append(pre([image])[0].copy())
        ys.append(int(mapping[y]) if mapping is not None else -1)
    if not xs:
        raise ExportError(f"the {split} split of '{spec}' holds no images")
    return ImageSet(np.stack(xs), np.asarray(ys, dtype=np.int64), f"{spec}:{split}[{len(xs)}]")


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
