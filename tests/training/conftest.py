"""Fixtures for training tests: tiny data sets of the exact on-disk layouts, made by the tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


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


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """The machine's cores are shared: tests use one torch thread."""
    torch.set_num_threads(1)


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "mnist")
