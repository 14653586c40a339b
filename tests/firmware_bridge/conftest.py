"""Fixtures for tests/firmware_bridge: every link test runs against both MCUs, the Python simulator and the
real firmware in simavr (marked `simavr`; built once per session by make into a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import Gates, RawPort, require_file, require_tool

from firmware_bridge.link import BridgeLink
from firmware_bridge.mcu_sim import McuSimulator

SPEED = 5000.0  # encoder ticks/s for the link tests
# Retries sized for a shared, loaded CI machine: both simulators are processes or threads the OS may leave
# unscheduled for a few hundred ms, which a real MCU never is (the link's default: 3 retries of 50 ms). 60 x 50 ms:
# at 15-56% steal the harness once went more than 1 s without answering.
RETRIES = 60


@pytest.fixture(scope="session")
def firmware_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(firmware ELF, harness): make into a fresh folder, so a test run never uses a stale build."""
    for tool in ("make", "gcc", "avr-gcc"):
        require_tool(tool)
    require_file("/usr/include/simavr/sim_avr.h", "libsimavr-dev")
    require_file("/usr/lib/avr/include/avr/io.h", "avr-libc")
    from firmware_bridge.simavr import build

    return build(tmp_path_factory.mktemp("firmware_build"))


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture(params=["python", pytest.param("firmware", marks=pytest.mark.simavr)])
def mcu_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sim(mcu_kind: str, gates: Gates, request: pytest.FixtureRequest) -> Iterator[Any]:
    s: Any
    if mcu_kind == "firmware":
        from firmware_bridge.simavr import FirmwareSimulator

        elf, harness = request.getfixturevalue("firmware_build")
        s = FirmwareSimulator(on_gate=gates, elf=elf, harness=harness)
    else:
        s = McuSimulator(on_gate=gates)
    s.start()
    s.set_speed(SPEED)
    yield s
    s.stop()


@pytest.fixture
def link(sim: Any) -> Iterator[BridgeLink]:
    with BridgeLink(sim.port, retries=RETRIES) as lk:
        yield lk


@pytest.fixture
def raw(sim: Any) -> Iterator[RawPort]:
    r = RawPort(sim.port)
    yield r
    r.close()
