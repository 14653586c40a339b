"""`edgesort train classify` end to end on tiny data: outputs, checkpoint contents, resume, early stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main as edgesort
from training.checkpoint import load_checkpoint, read_checkpoint

FAST = ["--threads", "1", "--no-progress", "--no-tensorboard", "--batch-size", "32"]


def _train(*args: str) -> int:
    return edgesort(["train", "classify", *args, *FAST])


def test_train_writes_a_self_describing_run(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        _train(
            "--data",
            f"mnist:{tiny_mnist}",
            "--model",
            "lenet5",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--lr",
            "0.01",
            "--augment",
            "none",
        )
        == 0
    )
    for name in ("best.pt", "last.pt", "metrics.json", "confusion.png", "curves.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["report_split"] == "test" and len(doc["history"]) == 2
    for split in ("val", "test"):
        m = doc[split]
        assert {"top1", "top5", "per_class", "confusion"} <= set(m)
        assert len(m["per_class"]) == 10 and {"precision", "recall"} <= set(m["per_class"][0])
        assert sum(map(sum, m["confusion"])) == m["count"]
    # the bars are easy: two epochs learn most of them
    assert doc["test"]["top1"] > 0.5
    model, ckpt = load_checkpoint(out / "best.pt")
    assert not model.training
    assert ckpt["arch"] == "lenet5" and ckpt["color_order"] == "GRAY" and ckpt["input_size"] == [28, 28]
    assert ckpt["metrics"]["top1"] == doc["test"]["top1"]
    assert ckpt["args"]["epochs"] == 2 and "func" not in ckpt["args"]
    assert "optimizer" not in ckpt and "optimizer" in read_checkpoint(out / "last.pt")


def test_resume_continues_where_it_stopped(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--data", f"mnist:{tiny_mnist}", "--model", "lenet5", "--out", str(out), "--lr", "0.01"]
    assert _train(*common, "--epochs", "1") == 0
    assert _train(*common, "--epochs", "3", "--resume", str(out / "last.pt")) == 0
    last = read_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [0, 1, 2]


def test_resume_from_best_is_refused(tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    common = ["--data", f"mnist:{tiny_mnist}", "--model", "lenet5", "--out", str(out)]
    assert _train(*common, "--epochs", "1") == 0
    assert _train(*common, "--epochs", "2", "--resume", str(out / "best.pt")) != 0
    assert "resume from last.pt" in capsys.readouterr().err


def test_early_stopping(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # lr 0: nothing improves after the first epoch, so patience 1 stops after the second
    assert (
        _train(
            "--data",
            f"mnist:{tiny_mnist}",
            "--model",
            "lenet5",
            "--epochs",
            "5",
            "--out",
            str(out),
            "--lr",
            "0",
            "--patience",
            "1",
            "--sched",
            "none",
        )
        == 0
    )
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


def test_bad_data_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _train("--data", f"mnist:{tmp_path}", "--model", "lenet5", "--epochs", "1", "--out", str(tmp_path / "o"))
    assert code == 66
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz is missing" in err and "Traceback" not in err


def test_recorded_command() -> None:
    from training.train import recorded_command

    argv = ["/venv/bin/edgesort", "-v", "train", "classify", "--data", "twin:0", "--out", "a b"]
    assert recorded_command(argv, 1) == "edgesort train classify --data twin:0 --out 'a b'"
    assert recorded_command(["/x/training/train.py", "--data", "twin:0"], 2) == (
        "torchrun --nproc_per_node 2 --no-python edgesort train classify --data twin:0"
    )


def test_evaluate_reproduces_the_run(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train("--data", f"mnist:{tiny_mnist}", "--model", "lenet5", "--epochs", "1", "--out", str(out)) == 0
    assert (
        edgesort(
            [
                "train",
                "evaluate",
                str(out / "best.pt"),
                "--data",
                f"mnist:{tiny_mnist}",
                "--split",
                "test",
                "--json",
                str(tmp_path / "m.json"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["confusion"] == json.loads((out / "metrics.json").read_text())["test"]["confusion"]


def test_init_starts_from_another_run(tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    common = ["--data", f"mnist:{tiny_mnist}", "--epochs", "1", "--augment", "none", "--lr", "0.01"]
    assert _train(*common, "--model", "lenet5", "--out", str(first)) == 0
    assert (
        _train(*common, "--model", "lenet5", "--out", str(second), "--init", str(first / "best.pt"), "--lr", "0") == 0
    )
    a, b = (read_checkpoint(d / "best.pt")["model"] for d in (first, second))
    assert all(a[k].equal(b[k]) for k in a)  # lr 0: the second run kept the first run's weights
    assert _train(*common, "--model", "deep_mnist", "--out", str(tmp_path / "c"), "--init", str(first / "best.pt")) != 0
    assert "cannot start this run" in capsys.readouterr().err
