"""The same command under torchrun with two CPU processes (gloo): it trains, shards, agrees with one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training_fixtures import make_mnist

ARGS = [
    "--model",
    "lenet5",
    "--epochs",
    "2",
    "--threads",
    "1",
    "--no-progress",
    "--no-tensorboard",
    "--augment",
    "none",
    "--lr",
    "0.01",
    "--batch-size",
    "32",
]


def test_two_process_torchrun_matches_one_process(tmp_path: Path) -> None:
    data = make_mnist(tmp_path / "mnist", n_train=480, n_test=120)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "training.train", "--data", f"mnist:{data}", "--out", str(one), *ARGS],
        check=True,
        env=env,
        timeout=300,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.train",
            "--data",
            f"mnist:{data}",
            "--out",
            str(two),
            *ARGS,
        ],
        check=True,
        env=env,
        timeout=300,
    )
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (a["world_size"], b["world_size"]) == (1, 2)
    # both ranks' unpadded shards add up to the whole split exactly once
    assert b["test"]["count"] == 120 and b["val"]["count"] == 40
    assert sum(sum(row) for row in b["test"]["confusion"]) == 120
    assert abs(a["test"]["top1"] - b["test"]["top1"]) <= 0.05
    assert b["test"]["top1"] >= 0.9
    assert not (two / "best.pt.tmp").exists() and (two / "best.pt").is_file()
