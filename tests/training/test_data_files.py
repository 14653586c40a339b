"""Loaders for the Grocery Store list files, image folders and the CUCUMBER-9 pickles."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import make_cucumber9, make_image_folder, write_cifar_batch

from training.data import DataError, build_dataset


# --- Grocery Store (real data)
@pytest.mark.parametrize(
    "query, n_train, n_val, n_classes",
    [
        ("", 2640, 296, 81),
        ("?labels=coarse", 2640, 296, 43),
        ("?produce=1", 1776, 196, 50),
        ("?labels=coarse&produce=1", 1776, 196, 34),
    ],
)
def test_grocery_counts(data_root: Path, query: str, n_train: int, n_val: int, n_classes: int) -> None:
    spec = f"grocery:{data_root / 'grocery_store'}{query}"
    train, val = build_dataset(spec, "train"), build_dataset(spec, "val")
    assert (len(train), len(val), train.info.num_classes) == (n_train, n_val, n_classes)
    assert train.info.labels == val.info.labels
    assert len(set(train.targets)) == n_classes


def test_grocery_produce_keeps_cucumber_and_drops_packages(data_root: Path) -> None:
    ds = build_dataset(f"grocery:{data_root / 'grocery_store'}?produce=1", "train")
    assert "Cucumber" in ds.info.labels and "Oatghurt" not in ds.info.labels
    assert all(p.parts[-4] in ("Fruit", "Vegetables") or p.parts[-3] in ("Fruit", "Vegetables") for p in ds.paths)
    x, _ = ds[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32


def test_grocery_test_split_is_withheld(data_root: Path) -> None:
    with pytest.raises(DataError, match="withheld"):
        build_dataset(f"grocery:{data_root / 'grocery_store'}", "test")


def _fake_grocery(data_root: Path, tmp_path: Path, lines: list[str]) -> Path:
    root = tmp_path / "gs"
    root.mkdir()
    shutil.copy(data_root / "grocery_store" / "classes.csv", root / "classes.csv")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_grocery_missing_image_is_named(data_root: Path, tmp_path: Path) -> None:
    root = _fake_grocery(data_root, tmp_path, ["train/Fruit/Apple/Golden-Delicious/x_001.jpg, 0, 0"])
    with pytest.raises(DataError, match=r"x_001\.jpg is missing"):
        build_dataset(f"grocery:{root}", "train")


def test_grocery_malformed_line_is_named(data_root: Path, tmp_path: Path) -> None:
    root = _fake_grocery(data_root, tmp_path, ["train/a.jpg, zero, 0"])
    with pytest.raises(DataError, match="line 1 is not 'path, fine id, coarse id'"):
        build_dataset(f"grocery:{root}", "train")


def test_grocery_bad_option(data_root: Path) -> None:
    with pytest.raises(DataError, match="labels must be fine or coarse"):
        build_dataset(f"grocery:{data_root / 'grocery_store'}?labels=medium", "train")


# --- folders
def test_flat_folder_split_is_stratified_disjoint_and_deterministic(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    spec = f"folder:{root}?val=0.2&test=0.2"
    parts = {s: build_dataset(spec, s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [18, 6, 6]
    assert np.bincount(parts["val"].targets).tolist() == [2, 2, 2]
    paths = [set(parts[s].paths) for s in parts]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])
    assert build_dataset(spec, "val").paths == parts["val"].paths
    x, _ = parts["train"][0]
    assert x.shape == (3, 224, 224) and parts["train"].info.labels == ["a", "b", "c"]


def test_presplit_folder(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "d" / "train", per_class=4)
    make_image_folder(tmp_path / "d" / "val", classes=("a", "c"), per_class=2)
    train, val = (
        build_dataset(f"folder:{tmp_path / 'd'}", "train"),
        build_dataset(f"folder:{tmp_path / 'd'}", "val"),
    )
    assert (len(train), len(val)) == (12, 4)
    assert val.info.labels == ["a", "b", "c"] and sorted(set(val.targets)) == [0, 2]
    with pytest.raises(DataError, match="no test folder"):
        build_dataset(f"folder:{tmp_path / 'd'}", "test")


def test_broken_image_is_named_when_read(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs", per_class=3)
    (root / "b" / "001.png").write_bytes(b"\x89PNG broken")
    ds = build_dataset(f"folder:{root}?val=0&test=0", "train")
    with pytest.raises(DataError, match=r"cannot decode image .*001\.png"):
        for i in range(len(ds)):
            ds[i]


# --- CUCUMBER-9
@pytest.mark.parametrize("channels", [3, 9])
def test_cucumber9_layouts(tmp_path: Path, channels: int) -> None:
    root = make_cucumber9(tmp_path / "c9", channels)
    spec = f"cucumber9:{root}"
    train, val, test = (build_dataset(spec, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (99, 9, 54)  # val: 10% of each class
    assert train.info.in_channels == channels and train.info.input_size == (32, 32)
    assert train.info.labels == ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]
    assert np.bincount(val.targets).tolist() == [1] * 9
    x, y = test[4]
    assert x.shape == (channels, 32, 32)
    raw = test.images[4]
    assert raw[:, 3 * y : 3 * y + 3].min() == 250  # planes land where they were written


def test_cucumber9_channel_major_rows(tmp_path: Path) -> None:
    """A row is the R plane, then G, then B (CIFAR-10's layout), not interleaved pixels."""
    root = tmp_path / "c9"
    root.mkdir()
    data = np.zeros((1, 3, 32, 32), np.uint8)
    data[0, 1] = 7  # green plane only
    write_cifar_batch(root / "data_batch_1", data.reshape(1, -1), [0])
    write_cifar_batch(root / "test_batch", data.reshape(1, -1), [0])
    ds = build_dataset(f"cucumber9:{root}", "test")
    assert ds.images[0, 1].eq(7).all() and ds.images[0, 0].eq(0).all()


def test_cucumber9_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    root = tmp_path / "c9"
    root.mkdir()

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("owned",))

    (root / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(DataError, match=r"builtins\.print"):
        build_dataset(f"cucumber9:{root}", "test")


def test_cucumber9_missing_and_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "c9"
    root.mkdir()
    with pytest.raises(DataError, match="data_batch_1 is missing"):
        build_dataset(f"cucumber9:{root}", "train")
    write_cifar_batch(root / "data_batch_1", np.zeros((2, 1000), np.uint8), [0, 1])
    with pytest.raises(DataError, match="neither 3 nor 9 square channels"):
        build_dataset(f"cucumber9:{root}", "train")
