from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import DataError, build_dataset, parse_spec


def test_parse_spec_with_options() -> None:
    assert parse_spec("grocery:/d/gs?labels=coarse&produce=1") == (
        "grocery",
        "/d/gs",
        {"labels": "coarse", "produce": "1"},
    )
    assert parse_spec("twin:7") == ("twin", "7", {})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mnist", "must look like KIND:PATH"),
        ("nope:/x", "unknown data kind 'nope'"),
        ("mnist:/does/not/exist", "does not exist"),
        ("twin:abc", "integer seed"),
        ("twin:1?bogus=2", "unknown option"),
        ("twin:1?train=x", "must be an integer"),
    ],
)
def test_bad_specs_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        build_dataset(spec, "train")


def test_tiny_mnist_splits(tiny_mnist: Path) -> None:
    spec = f"mnist:{tiny_mnist}"
    train, val, test = (build_dataset(spec, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (220, 20, 60)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    assert train.info.color_order == "GRAY" and train.info.labels == [str(i) for i in range(10)]


def test_missing_mnist_file_is_named(tiny_mnist: Path) -> None:
    (tiny_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is missing"):
        build_dataset(f"mnist:{tiny_mnist}", "test")


def test_broken_mnist_file_is_named(tiny_mnist: Path) -> None:
    (tiny_mnist / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is broken"):
        build_dataset(f"mnist:{tiny_mnist}", "train")


def test_real_mnist_counts(data_root: Path) -> None:
    spec = f"mnist:{data_root / 'mnist'}"
    assert [len(build_dataset(spec, s)) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    test = build_dataset(spec, "test")
    assert np.bincount(test.targets).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_twin_splits_are_disjoint_and_deterministic() -> None:
    pytest.importorskip("device.sim.dataset")
    spec = "twin:5?train=18&val=9&test=9"
    a, b = build_dataset(spec, "train"), build_dataset(spec, "train")
    assert torch.equal(a.images, b.images)
    val, test = build_dataset(spec, "val"), build_dataset(spec, "test")
    assert a.images.shape == (18, 3, 48, 144) and a.info.input_size == (48, 144)
    assert a.info.labels == ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]
    flat = {bytes(img.numpy()) for ds in (a, val, test) for img in ds.images}
    assert len(flat) == 36
