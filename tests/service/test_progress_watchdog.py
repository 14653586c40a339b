"""ProgressWatchdog: WATCHDOG=1 at half of WATCHDOG_USEC, and only when frames and MCU heartbeats advance.

The loop's clock is a counter the test moves, so the decisions are checked without sleeping; the pings go
through a real notify socket.
"""

from __future__ import annotations

import logging

import pytest
from sd_listener import NotifyListener

from device.service.notify import Notifier
from device.service.watchdog import ProgressWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watchdog(listener: NotifyListener, usec: int = 2_000_000) -> tuple[ProgressWatchdog, Clock]:
    clock = Clock()
    notifier = Notifier(listener.address, watchdog_usec=usec)
    return ProgressWatchdog(notifier, clock=clock), clock


def test_pings_at_half_the_period_while_progressing(notify_listener: NotifyListener) -> None:
    wd, clock = _watchdog(notify_listener)  # 2 s: a ping every 1 s
    assert wd.interval_s == 1.0
    sent = []
    seq, hb = 0, 500.0
    for _ in range(100):  # 10 s of a 10 Hz loop that makes progress every iteration
        seq, hb = seq + 1, hb + 0.1
        clock.now += 0.1
        sent.append(wd.tick(seq, hb))
    assert 9 <= sum(sent) <= 10  # the first tick is the baseline
    assert wd.pings == sum(sent)
    pings = notify_listener.wait_count(lambda m: "WATCHDOG=1" in m, wd.pings, timeout=5)
    assert len(pings) == wd.pings


@pytest.mark.parametrize("stuck", ["frame", "heartbeat", "both"])
def test_no_ping_without_progress(
    notify_listener: NotifyListener, stuck: str, caplog: pytest.LogCaptureFixture
) -> None:
    wd, clock = _watchdog(notify_listener)
    seq, hb = 0, 500.0
    wd.tick(seq, hb)
    with caplog.at_level(logging.WARNING, logger="edgesort.service"):
        for _ in range(50):  # 5 s, several ping periods
            clock.now += 0.1
            if stuck != "frame" and stuck != "both":
                seq += 1
            if stuck != "heartbeat" and stuck != "both":
                hb += 0.1
            assert not wd.tick(seq, hb)
    assert wd.pings == 0
    expected = {"frame": ["no new camera frame"], "heartbeat": ["no MCU heartbeat"],
                "both": ["no new camera frame", "no MCU heartbeat"]}[stuck]
    warnings = [r.getMessage() for r in caplog.records if "withholding" in r.getMessage()]
    assert len(warnings) == 1  # one line per event, not one per tick
    assert all(e in warnings[0] for e in expected)
    _, status = notify_listener.wait_for(lambda m: "STATUS" in m.fields, timeout=5)
    assert status.fields["STATUS"].startswith("stalled: ")


def test_resumes_after_a_stall(notify_listener: NotifyListener, caplog: pytest.LogCaptureFixture) -> None:
    wd, clock = _watchdog(notify_listener)
    wd.tick(0, 1.0)
    clock.now += 3.0
    assert not wd.tick(0, 2.0)  # camera stalled
    clock.now += 0.1
    with caplog.at_level(logging.INFO, logger="edgesort.service"):
        assert wd.tick(1, 2.1)  # overdue and progressing: pings at once
    assert "progress resumed" in caplog.text
    clock.now += 0.5
    assert not wd.tick(2, 2.6)  # but not before the next half period


def test_a_camera_restarting_its_sequence_counts_as_progress(notify_listener: NotifyListener) -> None:
    wd, clock = _watchdog(notify_listener)
    wd.tick(5000, 1.0)
    clock.now += 1.0
    assert wd.tick(0, 2.0)


def test_disabled_without_watchdog_usec(notify_listener: NotifyListener) -> None:
    wd = ProgressWatchdog(Notifier(notify_listener.address))
    assert not wd.enabled
    assert not any(wd.tick(i, float(i)) for i in range(10))
    assert notify_listener.messages == []
