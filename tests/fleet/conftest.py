"""Fixtures for tests/fleet: brokers and subscribers that are cleaned up after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_support import Broker, Collector


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    made: list[Broker] = []

    def make(**kw: Any) -> Broker:
        b = Broker(tmp_path / f"broker{len(made)}", **kw)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker]) -> Broker:
    return broker_factory()


@pytest.fixture
def collector_factory() -> Iterator[Callable[..., Collector]]:
    made: list[Collector] = []

    def make(url: str, filters: list[str], **kw: Any) -> Collector:
        c = Collector(url, filters, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
