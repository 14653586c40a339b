"""Nothing is lost: a 10 s broker outage and a SIGKILL of the reporter process, each with events flowing.

The subscriber dedupes by seq and counts raw and deduped messages: QoS 1 is at-least-once, so a raw duplicate
is allowed (and must be byte-identical, the same event with its original timestamp); a missing seq is not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fleet_support import Broker, Collector, dedupe

from device.config import DeviceConfig
from device.fleet.reporter import EXTRA_QUEUED, FleetReporter

pytestmark = pytest.mark.mqtt

OUTAGE_S = 10.0
RATE_HZ = 40.0  # events per second: the outage then holds more events than paho may keep in memory
DRIVER = Path(__file__).with_name("reporter_driver.py")


def _config(url: str, state: Path, device: str) -> DeviceConfig:
    return DeviceConfig.model_validate(
        {
            "device": {"id": device, "site": "test"},
            "mqtt": {"url": url, "telemetry_period_s": 60},
            "paths": {"state_dir": str(state)},
        }
    )


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)  # polling state that other threads/processes update
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_broker_down_10s_and_back_loses_nothing(
    broker_factory: Callable[..., Broker],
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # The broker keeps the subscriber's session across its restart (persistence on, session expiry set), as a
    # production broker does; the reporter's events survive the outage in its own outbox.
    broker = broker_factory(persistence=True)
    sub = collector_factory(broker.url, ["edgesort/v1/test/+/events/item"], session_expiry_s=600)
    rep = FleetReporter(_config(broker.url, tmp_path / "state", "outage-0"), versions={}, telemetry=dict)
    rep.start()
    _wait(lambda: rep.connected, 10, "the reporter to connect")

    emitted: list[tuple[int, float, float]] = []  # (sequence, wall time, seconds the call took)
    stop = threading.Event()

    def emitter() -> None:
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            seq = rep.item_event({"item": i, "grade": "L", "confidence": 0.8})
            emitted.append((seq, time.time(), time.monotonic() - t0))
            i += 1
            stop.wait(1 / RATE_HZ)  # paces the emitter

    thread = threading.Thread(target=emitter)
    thread.start()
    try:
        time.sleep(2)
        live = len(emitted)
        broker.stop()
        down_at = time.time()
        time.sleep(OUTAGE_S)
        # The outage must hold more events than paho may keep in memory, to show that bound below; a starved VM
        # once let the emitter run only 132 times in 10 s, so the outage lasts until enough have piled up.
        at_down = sum(t < down_at for _, t, _ in emitted)
        _wait(lambda: len(emitted) - at_down > rep.window + EXTRA_QUEUED + 20, 60, "events to pile up offline")
        pending_during_outage = rep.outbox.stats()["pending"]
        # paho's own memory stays bounded however long the outage (private attribute: paho has no public one)
        in_memory = len(rep._client._out_messages)
        up_at = time.time()
        broker.start()
        time.sleep(2)
    finally:
        stop.set()
        thread.join()
    total = len(emitted)
    assert [s for s, _, _ in emitted] == list(range(1, total + 1))
    during = [s for s, t, _ in emitted if down_at <= t < up_at]
    # Not blocking is read from each call, not from the count: a starved VM once let the emitter thread run only
    # 61 times in the 10 s (each call fast). A call waiting on the absent broker would take seconds (a connect
    # or publish timeout); an fsync on a starved machine takes tens of milliseconds.
    slowest = max(d for _, t, d in emitted if down_at <= t < up_at)
    assert slowest < 2.0, f"an event took {slowest:.2f} s to hand over while the broker was down: the emitter blocked"
    assert pending_during_outage >= len(during)
    assert in_memory <= rep.window + EXTRA_QUEUED < len(during)

    _wait(lambda: len(dedupe(sub.on("events/item"))[0]) >= total, 60, f"all {total} events at the subscriber")
    assert rep.wait_idle(10)
    by_seq, dups = dedupe(sub.on("events/item"))
    raw = len(sub.on("events/item"))
    record_property("raw", raw)
    record_property("deduped", len(by_seq))
    print(
        f"outage: emitted {total} ({live} before, {len(during)} during the outage); "
        f"subscriber raw {raw}, deduped {len(by_seq)}, duplicates {dups}"
    )
    assert sorted(by_seq) == list(range(1, total + 1)), "lost or invented events"
    assert raw == len(by_seq) + dups
    # The events made while the broker was down keep the time they happened, not the time they were delivered.
    assert all(by_seq[s]["ts"] < up_at for s in during)
    assert rep.stats()["mqtt"]["connects"] >= 2 and rep.stats()["outbox"]["pending"] == 0
    rep.stop()


def _read_seqs(proc: subprocess.Popen[str], until: int | None) -> list[int]:
    assert proc.stdout is not None
    seqs: list[int] = []
    for line in proc.stdout:
        if line.startswith("seq "):
            seqs.append(int(line.split()[1]))
            if until is not None and len(seqs) >= until:
                break
    return seqs


def _driver(url: str, state: Path, count: int, rate: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(DRIVER),
            "--state",
            str(state),
            "--broker",
            url,
            "--count",
            str(count),
            "--rate",
            str(rate),
            "--device",
            "kill-0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_reporter_killed_with_sigkill_and_restarted_loses_nothing(
    broker: Broker,
    collector_factory: Callable[..., Collector],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sub = collector_factory(
        broker.url, ["edgesort/v1/test/kill-0/events/item", "edgesort/v1/test/kill-0/status"]
    )
    state = tmp_path / "state"

    first = _driver(broker.url, state, count=100_000, rate=150)
    try:
        before = _read_seqs(first, until=300)
        first.send_signal(signal.SIGKILL)  # mid-stream: rows committed, some in flight, some not yet sent
    finally:
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    # The broker publishes the Last Will: the retained status says offline.
    sub.wait_for(lambda: any(m.json()["state"] == "offline" for m in sub.on("/status")), 10, "the Last Will")

    second = _driver(broker.url, state, count=200, rate=400)
    after = _read_seqs(second, until=None)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err[-2000:]
    assert after and after[0] > before[-1], "seq must continue across the restart, never restart or repeat"
    total = after[-1]

    _wait(lambda: len(dedupe(sub.on("events/item"))[0]) >= total, 60, f"all {total} events at the subscriber")
    by_seq, dups = dedupe(sub.on("events/item"))
    raw = len(sub.on("events/item"))
    record_property("raw", raw)
    record_property("deduped", len(by_seq))
    print(
        f"sigkill: {len(before)}+ seqs before the kill, {len(after)} after; subscriber raw {raw}, "
        f"deduped {len(by_seq)}, duplicates {dups}"
    )
    assert sorted(by_seq) == list(range(1, total + 1)), "lost or invented events"
    assert raw == len(by_seq) + dups
    states = [(m.json()["state"], m.json()["session"]) for m in sub.on("/status")]
    assert ("online", 1) in states and ("offline", 1) in states and ("online", 2) in states
    assert states[-1] == ("stopped", 2)


def test_a_broker_that_refuses_one_event_keeps_it_and_lets_the_others_through(
    broker_factory: Callable[..., Broker], collector_factory: Callable[..., Collector], tmp_path: Path
) -> None:
    """An ACL that denies alarms: mosquitto answers PUBACK 0x87 (not authorized). The alarm stays in the
    outbox and is retried (an ACL can be fixed); the item events around it are delivered."""
    acl = tmp_path / "acl"
    acl.write_text(
        "topic write edgesort/v1/test/acl-0/status\n"
        "topic write edgesort/v1/test/acl-0/events/item\n"
        "topic write edgesort/v1/test/acl-0/config/reported\n"
        "topic read edgesort/v1/#\n"
    )
    broker = broker_factory(extra=(f"acl_file {acl}",))
    sub = collector_factory(broker.url, ["edgesort/v1/test/acl-0/events/#"])
    rep = FleetReporter(_config(broker.url, tmp_path / "state", "acl-0"), versions={}, telemetry=dict)
    rep.start()
    _wait(lambda: rep.connected, 10, "the reporter to connect")
    items = [rep.item_event({"item": i}) for i in range(5)]
    alarm = rep.alarm("link_lost", "no MCU heartbeat")
    items += [rep.item_event({"item": i}) for i in range(5, 10)]
    _wait(lambda: len(dedupe(sub.on("events/item"))[0]) == 10, 20, "the ten item events")
    assert sorted(dedupe(sub.on("events/item"))[0]) == items
    assert not sub.on("events/alarm")
    stats = rep.outbox.stats()
    assert stats["pending"] == 1 and stats["rejected"] == 0  # kept for a retry, not dropped
    assert [r.seq for r in rep.outbox.next_after(0, 10)] == [alarm]
    # Fix the ACL (mosquitto rereads it on SIGHUP): the next retry goes through.
    acl.write_text(acl.read_text() + "topic write edgesort/v1/test/acl-0/events/alarm\n")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGHUP)
    _wait(lambda: sub.on("events/alarm"), 20, "the alarm after the ACL was fixed")
    assert sub.on("events/alarm")[0].json()["seq"] == alarm
    assert rep.wait_idle(10)
    rep.stop(drain_s=0)
