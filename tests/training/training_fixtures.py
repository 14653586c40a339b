"""Tiny data sets of the exact on-disk layouts, made by the tests (imported by name: unique module name)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def digit_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images whose class is visible (a bar at a class-dependent row): quick to learn."""
    x = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        x[i, 2 + 2 * int(label) : 4 + 2 * int(label), 4:24] = 255
    return x


def make_mnist(root: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", digit_images(labels, rng))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], *, bytes_keys: bool = False) -> None:
    """One batch of the CIFAR-10 python layout: a pickled dict with data (N x C*H*W uint8) and labels."""
    import pickle

    d = {"batch_label": "tiny", "data": data, "labels": labels, "filenames": [f"{i}.png" for i in labels]}
    if bytes_keys:  # how Python 2 pickles read back with encoding="bytes"
        d = {k.encode(): v for k, v in d.items()}
    path.write_bytes(pickle.dumps(d, protocol=2))


def make_cucumber9(root: Path, channels: int, per_class: int = 6, seed: int = 0) -> Path:
    """CUCUMBER-9 layout: data_batch_1..2, test_batch, batches.meta; 32x32, `channels` 3 or 9."""
    import pickle

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]
    for i, name in enumerate(("data_batch_1", "data_batch_2", "test_batch")):
        labels = [k % 9 for k in range(9 * per_class)]
        data = rng.integers(0, 60, size=(len(labels), channels, 32, 32), dtype=np.uint8)
        for n, label in enumerate(labels):
            data[n, :, 3 * label : 3 * label + 3, :] = 250  # a class-dependent band on every channel
        write_cifar_batch(root / name, data.reshape(len(labels), -1), labels, bytes_keys=i == 1)
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 32 * 32 * channels}))
    return root


def make_image_folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 10) -> Path:
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((20, 30, 3), 40 * k, dtype=np.uint8)
            img[:, i] = 255
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root
