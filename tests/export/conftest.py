"""Fixtures for the export tests: real MNIST images and the registered LeNet-5 trained on 3000 of them.

Two epochs on one thread take a few seconds and give a model that really classifies digits (> 90% top-1),
which the accuracy-gate tests need: a gate on an untrained model could not fail for the right reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from export_helpers import lenet_meta, mnist_spec, normalize
from torch import nn


@pytest.fixture(scope="session")
def mnist(data_root: Path) -> dict[str, np.ndarray]:
    from training.data import build_dataset

    spec = mnist_spec(data_root)
    train, val = build_dataset(spec, "train"), build_dataset(spec, "val")
    return {
        "train_x": train.images[:3000].numpy(),
        "train_y": np.asarray(train.targets[:3000], dtype=np.int64),
        "test_x": val.images[:600].numpy(),
        "test_y": np.asarray(val.targets[:600], dtype=np.int64),
    }


@pytest.fixture(scope="session")
def tiny_trained(mnist: dict[str, np.ndarray], data_root: Path) -> tuple[nn.Module, dict[str, Any]]:
    """LeNet-5 from the model registry, trained for two epochs on 3000 MNIST images."""
    from training.models import get_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = get_model("lenet5", 10, 1, input_size=(28, 28))
    x = torch.from_numpy(normalize(mnist["train_x"]))
    y = torch.from_numpy(mnist["train_y"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model, lenet_meta(model, mnist_spec(data_root))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_trained: tuple[nn.Module, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save(tiny_trained[1], path)
    return path
