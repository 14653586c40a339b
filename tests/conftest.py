"""Shared fixtures: where the data is, and how a missing tool turns into a skip (or, in CI, a failure)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# Property tests check what a function returns, never how fast: no per-example deadline (hypothesis' 200 ms
# failed test_random_chunking once in CI, one example at 344 ms on a VM whose hypervisor took half its time).
settings.register_profile("edgesort", deadline=None)
settings.load_profile("edgesort")


def _require_all() -> bool:
    """CI sets EDGESORT_REQUIRE_ALL=1: a skip for something CI should have installed is then a failure."""
    return os.environ.get("EDGESORT_REQUIRE_ALL") == "1"


def require_tool(name: str) -> str:
    """Return the path of an executable, or skip the test (fail under EDGESORT_REQUIRE_ALL=1)."""
    path = shutil.which(name)
    if path is None:
        reason = f"'{name}' is not installed (apt: see README)"
        if _require_all():
            pytest.fail(reason + " and EDGESORT_REQUIRE_ALL=1")
        pytest.skip(reason)
    return path


def data_dir() -> Path | None:
    env = os.environ.get("EDGESORT_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    p = data_dir()
    if p is None:
        reason = "data not found: set EDGESORT_DATA to the folder holding mnist/, grocery_store/, ..."
        if _require_all():
            pytest.fail(reason)
        pytest.skip(reason)
    return p


@pytest.fixture(scope="session")
def short() -> bool:
    """EDGESORT_SHORT=1 (CI): slow tests run in a short form."""
    return os.environ.get("EDGESORT_SHORT") == "1"
