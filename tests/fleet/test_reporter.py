"""FleetReporter against a real broker: status with Last Will, telemetry, events and their schemas."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fleet_support import Broker, Collector

from device.config import DeviceConfig
from device.fleet.outbox import OutboxError
from device.fleet.payloads import AlarmEvent, ItemEvent, Status, Telemetry
from device.fleet.reporter import EventError, FleetReporter, telemetry_payload

BASE = "edgesort/v1/test/rep-0"


def _cfg(url: str | None, state: Path, **mqtt: Any) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device": {"id": "rep-0", "site": "test"},
            "mqtt": {"url": url, "telemetry_period_s": 0.5, **mqtt},
            "paths": {"state_dir": str(state)},
        }
    )


def _snapshot() -> dict[str, Any]:
    return {
        "fps": np.float32(29.5),  # numpy values are what the daemon's counters hold
        "dropped_frames": 3,
        "latency_ms": {"infer": {"p50_ms": 4.1, "p99_ms": 9.0}},
        "counts": {"L": 10, "M": np.int64(25)},
        "reject_rate": 0.04,
        "belt_speed_mps": 0.5,
        "link": {"crc_errors": 0, "retries": 2},
        "model": "cucumber9@1.0 (3f2a9c)",
        "paused": False,
    }


@pytest.mark.mqtt
def test_status_telemetry_and_events(
    broker: Broker, collector_factory: Callable[..., Collector], tmp_path: Path
) -> None:
    rep = FleetReporter(
        _cfg(broker.url, tmp_path / "s"), versions={"model": "cucumber9@1.0"}, telemetry=_snapshot
    )
    rep.start()
    item_seq = rep.item_event(
        {
            "item": 7,
            "grade": "2L",
            "confidence": 0.97,
            "gate": 1,
            "outcome": "queued",
            "ts": 1_700_000_000.25,
            "length_mm": np.float64(231.5),
        }
    )
    alarm_seq = rep.alarm("camera_stalled", "no frame for 2.0 s", severity="error", camera="cam0")
    assert (item_seq, alarm_seq) == (1, 2)  # one monotonic counter for all events of the device

    # A subscriber that arrives later still gets the retained status.
    time.sleep(0.5)
    sub = collector_factory(broker.url, [f"{BASE}/#"])
    status = sub.wait_for(
        lambda: next((m for m in sub.on("/status") if m.retain), None), 10, "retained status"
    )
    st = Status.model_validate_json(status.payload)
    assert (st.state, st.session, st.versions["model"]) == ("online", 1, "cucumber9@1.0")
    assert st.stream == rep.stream

    tele = sub.wait_for(lambda: sub.on("/telemetry"), 10, "telemetry")[-1]
    t = Telemetry.model_validate_json(tele.payload)
    assert t.fps == pytest.approx(29.5) and t.counts == {"L": 10, "M": 25} and t.snapshot_error is None
    assert t.latency_ms["infer"].p99_ms == 9.0 and t.session == 1 and t.mqtt.connected

    sub2 = collector_factory(broker.url, [f"{BASE}/events/#"])
    rep.item_event({"item": 8, "grade": "M"})
    sub2.wait_for(lambda: sub2.on("events/item"), 10, "an item event")
    rep.stop()
    # Events are not retained: sub2 sees only what came after it subscribed.
    ev = ItemEvent.model_validate_json(sub2.on("events/item")[0].payload)
    assert ev.seq == 3 and ev.grade == "M" and ev.stream == rep.stream

    stopped = sub.wait_for(
        lambda: [m for m in sub.on("/status") if m.json()["state"] == "stopped"], 10, "stopped"
    )
    assert stopped[-1].json()["session"] == 1
    time.sleep(0.5)
    assert not [m for m in sub.on("/status") if m.json()["state"] == "offline"], (
        "a clean stop sends no Last Will"
    )


@pytest.mark.mqtt
def test_original_event_timestamps_and_payloads_reach_the_subscriber(
    broker: Broker, collector_factory: Callable[..., Collector], tmp_path: Path
) -> None:
    sub = collector_factory(broker.url, [f"{BASE}/events/#"])
    rep = FleetReporter(_cfg(broker.url, tmp_path / "s"), versions={}, telemetry=dict)
    rep.start()
    rep.item_event({"item": 7, "grade": "2L", "confidence": 0.97, "ts": 1_700_000_000.25, "length_mm": 231.5})
    rep.alarm("late_eject", "item 7 reached gate 1 late", severity="warning", gate=1)
    sub.wait_for(lambda: len(sub.messages) >= 2, 10, "two events")
    rep.stop()
    item = ItemEvent.model_validate_json(sub.on("events/item")[0].payload)
    assert item.ts == 1_700_000_000.25 and item.model_extra == {"length_mm": 231.5}
    alarm = AlarmEvent.model_validate_json(sub.on("events/alarm")[0].payload)
    assert (alarm.seq, alarm.kind, alarm.severity, alarm.model_extra) == (
        2,
        "late_eject",
        "warning",
        {"gate": 1},
    )


def test_telemetry_payload_is_pure_and_keeps_its_own_figures_when_the_snapshot_is_bad() -> None:
    common: dict[str, Any] = dict(
        device="d",
        site="s",
        session=3,
        outbox={"pending": 2, "pending_bytes": 300, "last_seq": 9},
        mqtt={"connected": True, "connects": 1, "disconnects": 0},
        commands={"accepted": 0, "refused": 1},
        temperatures={"CPU-therm": 41.5},
        now=100.0,
    )
    good = json.loads(telemetry_payload(_snapshot(), **common))
    assert good == json.loads(telemetry_payload(_snapshot(), **common))  # same inputs, same bytes
    assert good["fps"] == pytest.approx(29.5) and good["temperatures_c"] == {"CPU-therm": 41.5}
    bad = json.loads(telemetry_payload({"fps": "fast", "counts": {"M": -1.5}}, **common))
    assert "fps" in bad["snapshot_error"] and bad["outbox"]["pending"] == 2 and "fps" not in bad
    failed = json.loads(telemetry_payload(RuntimeError("camera gone"), **common))
    assert failed["snapshot_error"] == "snapshot failed: camera gone"
    own_wins = json.loads(telemetry_payload({"session": 99, "fps": 1.0}, **common))
    assert own_wins["session"] == 3  # the daemon cannot overwrite the reporter's own fields
    theirs = json.loads(telemetry_payload({"temperatures_c": {"GPU-therm": 50.0}}, **common))
    assert theirs["temperatures_c"] == {"GPU-therm": 50.0}  # the daemon's own reading wins over sysfs
    assert "not a dict" in json.loads(telemetry_payload([1, 2], **common))["snapshot_error"]  # type: ignore[arg-type]


def test_bad_events_are_one_clear_error_and_consume_no_seq(tmp_path: Path) -> None:
    rep = FleetReporter(_cfg(None, tmp_path / "s"), versions={}, telemetry=dict)
    rep.start()
    with pytest.raises(EventError, match=r"\['seq'\] are set by the reporter"):
        rep.item_event({"seq": 5})
    with pytest.raises(EventError, match="confidence"):
        rep.item_event({"confidence": 1.7})
    with pytest.raises(EventError, match="not JSON"):
        rep.item_event({"where": {1, 2}})
    with pytest.raises(EventError, match="kind"):
        rep.alarm("Camera Stalled!", "bad kind")
    assert rep.item_event({"item": 1}) == 1
    rep.stop()


def test_outbox_only_mode_keeps_events_and_counts_sessions(tmp_path: Path) -> None:
    for expected_session in (1, 2):
        rep = FleetReporter(_cfg(None, tmp_path / "s"), versions={}, telemetry=dict)
        rep.start()
        assert rep.session == expected_session
        rep.item_event({"item": expected_session})
        rep.stop()
    rep = FleetReporter(_cfg(None, tmp_path / "s"), versions={}, telemetry=dict)
    stats = rep.outbox.stats()
    assert stats["pending"] == 2 and stats["last_seq"] == 2  # waiting for a broker, in order
    assert [json.loads(r.payload)["item"] for r in rep.outbox.next_after(0, 10)] == [1, 2]
    rep.stop()
    with pytest.raises(OutboxError, match="reporter was stopped"):
        rep.item_event({"item": 3})
