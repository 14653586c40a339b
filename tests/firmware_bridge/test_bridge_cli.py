"""`edgesort bridge ...` against the Python MCU simulator (through our own register(), as device/cli.py
calls it, so this test does not depend on device/)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from firmware_bridge import cli
from firmware_bridge.mcu_sim import McuSimulator


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgesort")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def sim() -> Iterator[McuSimulator]:
    s = McuSimulator()
    s.start()
    s.set_speed(1000)
    yield s
    s.stop()


def test_ping_status_fire(sim: McuSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bridge", "ping", "--port", sim.port, "--count", "3"]) == 0
    assert "3 round trips" in capsys.readouterr().out
    assert main(["bridge", "status", "--port", sim.port]) == 0
    out = capsys.readouterr().out
    assert "state=LINKED" in out and "seq_gaps=0" in out
    assert main(["bridge", "fire", "--port", sim.port, "--gate", "1", "--pulse-ms", "20"]) == 0
    assert sim.mcu_counters["rx_frames"] > 0


def test_errors_are_one_sentence(sim: McuSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bridge", "fire", "--port", sim.port, "--gate", "9"]) == 1
    assert capsys.readouterr().err.strip() == "edgesort bridge fire: gate 9 does not exist: the MCU has gates 0..7"
    assert main(["bridge", "ping", "--port", "/dev/does-not-exist"]) == 1
    assert "cannot open the MCU port" in capsys.readouterr().err
