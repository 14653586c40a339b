"""MNIST from its IDX files (gzipped or not): train 55k and val 5k split out of the 60k set, test = t10k.

Option limit=N keeps the first N images of each split (short test runs)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from training.data import (
    ArrayData,
    ClassificationData,
    DataError,
    DataInfo,
    check_options,
    option_int,
    resolve_path,
)

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
VAL_FRACTION = 12  # the last 1/12 of the training file (5k of 60k), as in TensorFlow's read_data_sets
MEAN, STD = (0.1307,), (0.3081,)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataError(f"MNIST file {root / (stem + '.gz')} is missing")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX array; numpy does the work, the header is 4 bytes plus one big-endian uint32 per dim."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"magic 0x{zero:04x}{dtype:02x}{ndim:02x} is not an unsigned-byte IDX header")
        shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, struct.error, gzip.BadGzipFile) as exc:
        raise DataError(f"MNIST file {path} is broken: {exc}") from exc


def load_arrays(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = FILES[part]
    images, labels = read_idx(_find(root, images_stem)), read_idx(_find(root, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def build(spec: str, target: str, options: dict[str, str], split: str) -> ClassificationData:
    check_options(spec, options, {"limit"})
    limit = option_int(spec, options, "limit", 0)  # keep the first N of the split (quick runs); 0 = all
    root = resolve_path(spec, target)
    images, labels = load_arrays(root, "test" if split == "test" else "train")
    if split != "test":
        cut = len(labels) - len(labels) // VAL_FRACTION
        images, labels = (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    info = DataInfo(
        spec=spec,
        source="mnist",
        labels=[str(i) for i in range(10)],
        in_channels=1,
        input_size=(28, 28),
        mean=MEAN,
        std=STD,
        color_order="GRAY",
        augment="digits",
        counts={split: len(labels)},
    )
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    return ArrayData(info, x, torch.from_numpy(labels.astype(np.int64)), split)
