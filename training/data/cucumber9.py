"""CUCUMBER-9 (workpiles, 2016): CIFAR-10 python pickles of 32x32 cucumber images in nine grades.

Files: data_batch_1..N (train), test_batch, batches.meta (label_names). Each batch is a dict with `data`
(uint8, one row per image, channel-major planes) and `labels`. Prototype 1 stores one view (3 channels);
prototype 2 stores three views (top, bottom, side) as 9 channels. The channel count and the (square) image
size follow from the row length. val is a stratified 10% of the training batches (option val=, seed=)."""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data import (
    ArrayData,
    ClassificationData,
    DataError,
    DataInfo,
    check_options,
    option_float,
    option_int,
    resolve_path,
)

# A pickle can run code when it is loaded: only the classes a numpy-array pickle needs may be named in one.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("_codecs", "encode"),  # protocol-2 pickles of byte buffers go through it
}


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file has no business naming")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict[str, Any]:
    try:
        # latin1 reads the Python 2 pickles of CIFAR-10 and CUCUMBER-9 (byte strings stay byte strings)
        obj = _DataOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"CUCUMBER-9 file {path} cannot be read: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CUCUMBER-9 file {path} is not a dict of data and labels")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _shape(row: int, path: Path) -> tuple[int, int]:
    """(channels, side) of a row of `row` bytes: 3 x side x side or 9 x side x side (never both)."""
    for channels in (3, 9):
        side = math.isqrt(row // channels)
        if row % channels == 0 and side * side * channels == row:
            return channels, side
    raise DataError(f"CUCUMBER-9 file {path}: rows of {row} bytes are neither 3 nor 9 square channels")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = unpickle(path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"CUCUMBER-9 file {path} lacks 'data' or 'labels'")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.dtype != np.uint8:
        raise DataError(f"CUCUMBER-9 file {path}: data is {data.dtype}, not uint8")
    n = len(labels)
    if data.ndim == 4 and data.shape[0] == n:
        return data, labels
    if data.ndim != 2:
        raise DataError(f"CUCUMBER-9 file {path}: data has shape {data.shape}")
    if data.shape[0] == n:
        channels, side = _shape(data.shape[1], path)
        return data.reshape(n, channels, side, side), labels
    if n and data.shape[0] % n == 0:  # one row per channel plane
        channels, side = data.shape[0] // n, math.isqrt(data.shape[1])
        if channels in (3, 9) and side * side == data.shape[1]:
            return data.reshape(n, channels, side, side), labels
    raise DataError(f"CUCUMBER-9 file {path}: {data.shape[0]} data rows do not fit {n} labels")


def _batches(root: Path) -> list[Path]:
    found = [p for p in root.iterdir() if re.fullmatch(r"data_batch_\d+", p.name)]
    if not found:
        raise DataError(f"CUCUMBER-9 file {root / 'data_batch_1'} is missing")
    return sorted(found, key=lambda p: int(p.name.rsplit("_", 1)[1]))


def build(spec: str, target: str, options: dict[str, str], split: str) -> ClassificationData:
    check_options(spec, options, {"val", "seed"})
    root = resolve_path(spec, target)
    if split == "test":
        if not (root / "test_batch").is_file():
            raise DataError(f"CUCUMBER-9 file {root / 'test_batch'} is missing")
        data, labels = read_batch(root / "test_batch")
    else:
        parts = [read_batch(p) for p in _batches(root)]
        if len({p[0].shape[1:] for p in parts}) != 1:
            raise DataError(f"CUCUMBER-9 batches in {root} have different image shapes")
        data, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        val = option_float(spec, options, "val", 0.1)
        if not 0 < val < 1:
            raise DataError(f"data spec '{spec}': val must be a fraction between 0 and 1")
        rng = np.random.default_rng(option_int(spec, options, "seed", 0))
        is_val = np.zeros(len(labels), bool)
        for label in np.unique(labels):
            idx = np.flatnonzero(labels == label)
            is_val[rng.permutation(idx)[: round(val * len(idx))]] = True
        keep = is_val if split == "val" else ~is_val
        data, labels = data[keep], labels[keep]
    meta = root / "batches.meta"
    if meta.is_file():
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in unpickle(meta).get("label_names", [])]
    else:
        from device.grades import GRADES

        names = list(GRADES)
    if not names or (len(labels) and int(labels.max()) >= len(names)) or (len(labels) and labels.min() < 0):
        raise DataError(f"CUCUMBER-9 labels in {root} do not fit the {len(names)} label names")
    channels, h, w = data.shape[1:]
    info = DataInfo(
        spec=spec,
        source="cucumber9",
        labels=names,
        in_channels=channels,
        input_size=(h, w),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        color_order="RGB",
        augment="small",
        counts={split: len(labels)},
    )
    return ArrayData(info, torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels), split)
