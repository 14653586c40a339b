"""Helpers shared by the export tests: MNIST normalisation and a checkpoint dict for a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

MEAN, STD = 0.1307, 0.3081


def normalize(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 1, 28, 28) or (N, 28, 28) -> NCHW float32 as the MNIST eval preset does (1/255, mean/std)."""
    x = images_u8.astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x
    return (x - MEAN) / STD


def mnist_spec(data_root: Path) -> str:
    return f"mnist:{data_root / 'mnist'}"


def lenet_meta(model: nn.Module, spec: str, **card: Any) -> dict[str, Any]:
    """A checkpoint dict in the format of INTERFACES.md (Checkpoints) for the registered 'lenet5'."""
    return {
        "arch": "lenet5",
        "num_classes": 10,
        "in_channels": 1,
        "input_size": [28, 28],
        "mean": [MEAN],
        "std": [STD],
        "color_order": "GRAY",
        "resize": "stretch",
        "labels": [str(i) for i in range(10)],
        "args": {"epochs": 2, "lr": 0.003},
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metrics": {"top1": 0.0, "top5": 0.0, "per_class": {}, "confusion": []},
        "dataset": {"spec": spec, "counts": {"train": 3000}},
        "epoch": 2,
        "git_revision": "",
        "card": {"name": "lenet5-mnist-test", "notes": "trained by the export tests", **card},
    }
