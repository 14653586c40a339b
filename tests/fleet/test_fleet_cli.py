"""`edgesort fleet cmd|watch` and `edgesort bench outbox` against a real broker and a running reporter."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_support import Broker, RecordingHandler

from device.config import DeviceConfig
from device.errors import ConfigError, EdgesortError
from device.fleet import bench
from device.fleet.cli import register
from device.fleet.reporter import FleetReporter
from device.fleet.watch import FleetView
from device.signing import generate_keypair

pytestmark = pytest.mark.mqtt


def _run(argv: list[str]) -> int:
    """Parse like `edgesort` does (the fleet plugin registered on a fresh parser) and run the handler."""
    parser = argparse.ArgumentParser(prog="edgesort")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def device(
    broker: Broker, tmp_path: Path
) -> Iterator[tuple[FleetReporter, RecordingHandler, dict[str, Path]]]:
    keys = {"ops": tmp_path / "ops.key", "rogue": tmp_path / "rogue.key"}
    generate_keypair(keys["ops"], tmp_path / "ops.pub")
    generate_keypair(keys["rogue"], tmp_path / "rogue.pub")
    handler = RecordingHandler()
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": "cli-0", "site": "farm"},
            "mqtt": {
                "url": broker.url,
                "telemetry_period_s": 0.5,
                "command_keys": [str(tmp_path / "ops.pub")],
            },
            "paths": {"state_dir": str(tmp_path / "state")},
        }
    )
    rep = FleetReporter(
        cfg,
        versions={},
        telemetry=lambda: {"fps": 24.0, "counts": {"M": 4, "S": 1}, "reject_rate": 0.2},
        commands=handler,
    )
    rep.start()
    deadline = time.monotonic() + 10
    while not rep.connected and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the first CONNACK
    yield rep, handler, keys
    rep.stop()


def test_fleet_cmd_verbs(
    device: Any, broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, handler, keys = device
    b = ["--broker", broker.url]
    assert _run(["fleet", "cmd", "farm/cli-0", "pause", *b]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert _run(["fleet", "cmd", "cli-0", "resume", "--site", "farm", *b]) == 0
    out = tmp_path / "belt.jpg"
    assert _run(["fleet", "cmd", "farm/cli-0", "snapshot", "-o", str(out), *b]) == 0
    assert out.read_bytes()[:2] == b"\xff\xd8"
    capsys.readouterr()

    # set_config: signed, version picked from the retained config/reported (highest + 1)
    assert (
        _run(
            [
                "fleet",
                "cmd",
                "farm/cli-0",
                "set_config",
                "sorting.confidence_floor=0.72",
                "line.margin_ms=20",
                "--key",
                str(keys["ops"]),
                *b,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["result"] == {"version": 1}
    assert (
        _run(
            [
                "fleet",
                "cmd",
                "farm/cli-0",
                "set_config",
                "sorting.confidence_floor=0.74",
                "--key",
                str(keys["ops"]),
                *b,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["result"] == {"version": 2}
    assert handler.configs[-1]["sorting"]["confidence_floor"] == 0.74
    assert handler.configs[-1]["line"]["margin_ms"] == 20  # the earlier change stays in force

    # refused: a key the device does not trust; exit 1 and the reason on stderr
    assert (
        _run(
            [
                "fleet",
                "cmd",
                "farm/cli-0",
                "set_config",
                "sorting.confidence_floor=0.5",
                "--key",
                str(keys["rogue"]),
                *b,
            ]
        )
        == 1
    )
    assert "signature refused" in capsys.readouterr().err
    assert handler.calls == ["pause", "resume", "snapshot", "set_config", "set_config"]


def test_fleet_cmd_mistakes_are_one_sentence(device: Any, broker: Broker) -> None:
    b = ["--broker", broker.url]
    with pytest.raises(ConfigError, match="must be signed"):
        _run(["fleet", "cmd", "farm/cli-0", "set_config", "sorting.confidence_floor=0.7", *b])
    with pytest.raises(ConfigError, match="takes no arguments"):
        _run(["fleet", "cmd", "farm/cli-0", "pause", "x=1", *b])
    with pytest.raises(EdgesortError, match="no answer from farm/nobody"):
        _run(["fleet", "cmd", "farm/nobody", "pause", "--timeout", "1", *b])
    with pytest.raises(EdgesortError, match="cannot reach the broker"):
        _run(["fleet", "cmd", "farm/cli-0", "pause", "--broker", "mqtt://127.0.0.1:1"])


def test_fleet_watch_shows_the_device(
    device: Any, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    rep, _, _ = device
    # events are not retained: the alarm must come while the watch listens
    timer = threading.Timer(1.0, rep.alarm, ("link_lost", "no MCU heartbeat for 500 ms"))
    timer.start()
    assert _run(["fleet", "watch", "--broker", broker.url, "--once", "--duration", "2.5"]) == 0
    timer.join()
    out = capsys.readouterr().out
    assert "farm/cli-0" in out and "online" in out and "24.0" in out and "M:4 S:1" in out and "20.0%" in out
    assert "1 link_lost: no MCU heartbeat" in out


def test_fleet_view_is_pure_state() -> None:
    view = FleetView()
    base = "edgesort/v1/farm/line-1"
    view.update(f"{base}/status", b'{"state": "offline", "session": 4}', now=100.0)
    view.update(f"{base}/events/alarm", b'{"kind": "camera_stalled", "message": "no frame"}', now=101.0)
    view.update(f"{base}/telemetry", b"not json", now=102.0)
    view.update("other/topic", b"{}", now=102.0)
    row = view.rows[("farm", "line-1")]
    assert (row.state, row.session, row.alarms, row.last_seen) == ("offline", 4, 1, 101.0)
    assert view.ignored == 2
    view.update(
        f"{base}/telemetry", b'{"fps": 12.5, "counts": {"L": 3}, "outbox": {"pending": 7}}', now=103.0
    )
    assert (view.rows[("farm", "line-1")].state, view.rows[("farm", "line-1")].pending) == ("online", 7)
    assert view.table(now=200.0).row_count == 1


def test_bench_outbox_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "outbox.json"
    assert bench.run(parser.parse_args(["--events", "60", "--json", str(out)])) == 0
    report = json.loads(out.read_text())
    assert report["bench"] == "outbox" and [r["fsync"] for r in report["results"]] == [True, False]
    for r in report["results"]:
        assert r["append_events_per_s"] > 0 and r["end_to_end_events_per_s"] > 0
    assert json.loads(capsys.readouterr().out) == report
