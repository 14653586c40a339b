"""Paths and the root conftest's `require_tool` for the service tests.

tests/service has its own conftest.py, so `import conftest` here would find that one: the root one is loaded
by path, keeping its skip-or-fail policy (EDGESORT_REQUIRE_ALL) in one place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("edgesort_root_conftest", REPO / "tests" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
require_tool = _root.require_tool
