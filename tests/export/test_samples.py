"""Images for parity, calibration and the gate are preprocessed with the checkpoint's statistics, not the data
set's defaults (a model fine-tuned from pretrained weights carries those weights' mean/std)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from export_helpers import mnist_spec

from device.bundle import InputSpec
from export.samples import iter_raw_images, load_image_set, spread_indices


def test_images_use_the_checkpoints_mean_and_std(data_root: Path) -> None:
    spec = mnist_spec(data_root)
    own = InputSpec(name="images", shape=("batch", 1, 28, 28), color_order="GRAY", mean=(0.5,), std=(0.25,))
    got = load_image_set(spec, "val", 8, own, labels=tuple(str(i) for i in range(10)))
    raw = np.stack([img[:, :, 0] for img, _ in iter_raw_images(spec, "val", 8)])
    np.testing.assert_allclose(got.images[:, 0], (raw / 255.0 - 0.5) / 0.25, atol=1e-5)
    assert got.labels.tolist() == [y for _, y in iter_raw_images(spec, "val", 8)]
    assert got.source.endswith(":val[8]")


def test_labels_map_by_name_and_calibration_needs_none(data_root: Path) -> None:
    spec = mnist_spec(data_root)
    own = InputSpec(name="images", shape=("batch", 1, 28, 28), color_order="GRAY", mean=(0.1,), std=(0.3,))
    reversed_labels = tuple(str(i) for i in reversed(range(10)))
    mapped = load_image_set(spec, "val", 5, own, labels=reversed_labels)
    truth = [y for _, y in iter_raw_images(spec, "val", 5)]
    assert mapped.labels.tolist() == [9 - y for y in truth]
    assert set(load_image_set(spec, "val", 5, own).labels.tolist()) == {-1}


def test_spread_indices() -> None:
    assert spread_indices(10, 0).tolist() == list(range(10))
    assert spread_indices(10, 3).tolist() == [0, 4, 9] or spread_indices(10, 3).tolist() == [0, 5, 9]
    assert spread_indices(0, 5).tolist() == []
