"""Fixtures for the service tests: a stand-in for systemd's notify socket (see sd_listener.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sd_listener import NotifyListener


@pytest.fixture
def notify_listener(tmp_path: Path) -> Iterator[NotifyListener]:
    """Bound to a file in tmp_path, or to the abstract namespace when the path is too long for sun_path."""
    path = tmp_path / "notify.sock"
    address = str(path) if len(str(path)) < 100 else f"@edgesort-test-{uuid.uuid4().hex}"
    listener = NotifyListener(address)
    yield listener
    listener.close()
    if not address.startswith("@") and os.path.exists(address):
        os.unlink(address)


@pytest.fixture
def abstract_listener() -> Iterator[NotifyListener]:
    listener = NotifyListener(f"@edgesort-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()
