from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from training.data import DataInfo
from training.models import get_model


def _info() -> DataInfo:
    return DataInfo(
        spec="twin:0",
        source="twin",
        labels=list("abcdefghi"),
        in_channels=3,
        input_size=(48, 144),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        counts={"train": 10},
    )


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    model = get_model("twin_cnn", 9, 3)
    metrics = {"split": "val", "top1": 0.5, "top5": 1.0, "per_class": [], "confusion": [[1]], "count": 2}
    ckpt = make_checkpoint(
        model,
        arch="twin_cnn",
        info=_info(),
        args={"lr": 0.1, "transfer": None},
        metrics=metrics,
        epoch=3,
        command="edgesort train classify ...",
        revision="abc",
    )
    assert set(REQUIRED_KEYS) <= set(ckpt)
    save_checkpoint(ckpt, tmp_path / "best.pt")
    loaded, meta = load_checkpoint(tmp_path / "best.pt")
    assert not loaded.training
    assert meta["input_size"] == [48, 144] and meta["labels"] == list("abcdefghi") and meta["epoch"] == 3
    assert meta["card"]["recipe"]["git_revision"] == "abc" and meta["card"]["metrics"]["top1"] == 0.5
    x = torch.rand(2, 3, 48, 144)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_broken_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt cannot be read"):
        load_checkpoint(bad)


def test_foreign_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(get_model("lenet5", 10, 1).state_dict(), path)
    with pytest.raises(CheckpointError, match="not an edgesort checkpoint"):
        load_checkpoint(path)
