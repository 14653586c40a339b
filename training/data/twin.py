"""Item crops from the digital twin (device.sim.dataset.twin_crops), exactly as the sorter crops them.

`twin:SEED` makes three disjoint splits from three derived seeds (3*SEED, 3*SEED+1, 3*SEED+2), so no crop of
the test split was seen in training and any two SEEDs give disjoint data."""

from __future__ import annotations

import numpy as np
import torch

from training.data import ArrayData, ClassificationData, DataError, DataInfo, check_options, option_int

DEFAULT_COUNTS = {"train": 12000, "val": 2000, "test": 4000}
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def split_seed(seed: int, split: str) -> int:
    return 3 * seed + SPLIT_INDEX[split]


def build(spec: str, target: str, options: dict[str, str], split: str) -> ClassificationData:
    check_options(spec, options, set(DEFAULT_COUNTS))
    try:
        seed = int(target)
    except ValueError:
        raise DataError(f"data spec '{spec}': twin needs an integer seed (twin:SEED), not '{target}'") from None
    count = option_int(spec, options, split, DEFAULT_COUNTS[split])
    if count <= 0:
        raise DataError(f"data spec '{spec}': the {split} count must be positive")
    from device.grades import GRADES
    from device.sim.dataset import CROP_HW, twin_crops

    images, labels = twin_crops(split_seed(seed, split), count)
    h, w = CROP_HW
    if images.shape != (count, h, w, 3) or images.dtype != np.uint8:
        raise DataError(f"twin_crops gave {images.dtype} {images.shape}, expected uint8 {(count, h, w, 3)}")
    info = DataInfo(
        spec=spec,
        source="twin",
        labels=list(GRADES),
        in_channels=3,
        input_size=(h, w),
        mean=MEAN,
        std=STD,
        color_order="RGB",
        augment="crops",
        counts={split: count},
    )
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ArrayData(info, x, torch.from_numpy(np.asarray(labels, dtype=np.int64)), split)
