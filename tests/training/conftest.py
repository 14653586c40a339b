"""Fixtures for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_fixtures import make_mnist


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """The machine's cores are shared: tests use one torch thread."""
    torch.set_num_threads(1)


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "mnist")
