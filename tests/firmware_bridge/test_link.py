"""BridgeLink against the Python MCU simulator over a real pty: the protocol's promises, end to end."""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Callable, Iterator

import pytest
import serial

from firmware_bridge import protocol as p
from firmware_bridge.link import (
    BridgeLink,
    BridgeNotConnected,
    BridgeReset,
    BridgeTimeout,
    FiredEvent,
    QueueResult,
)
from firmware_bridge.mcu_sim import McuSimulator
from firmware_bridge.protocol import McuState, MsgType, Result

SPEED = 5000.0  # ticks/s


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll until cond() holds; the timeout only bounds a hang, it is not a performance check."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


class Gates:
    def __init__(self) -> None:
        self.events: list[tuple[int, bool, int]] = []
        self.lock = threading.Lock()

    def __call__(self, gate: int, on: bool, count: int) -> None:
        with self.lock:
            self.events.append((gate, on, count))

    def rises(self) -> list[tuple[int, int]]:
        with self.lock:
            return [(g, c) for g, on, c in self.events if on]

    def energised(self) -> set[int]:
        state: dict[int, bool] = {}
        with self.lock:
            for g, on, _ in self.events:
                state[g] = on
        return {g for g, on in state.items() if on}


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def sim(gates: Gates) -> Iterator[McuSimulator]:
    s = McuSimulator(on_gate=gates)
    s.start()
    s.set_speed(SPEED)
    yield s
    s.stop()


@pytest.fixture
def link(sim: McuSimulator) -> Iterator[BridgeLink]:
    with BridgeLink(sim.port) as lk:
        yield lk


class RawPort:
    """The pty driven by hand, for what BridgeLink would never send (duplicates, silence)."""

    def __init__(self, port: str) -> None:
        self.s = serial.serial_for_url(port, baudrate=115200, timeout=0.05)
        self.dec = p.FrameDecoder()
        self.seq = 0
        self.backlog: list[p.Frame] = []

    def send(self, t: MsgType, seq: int | None = None, **fields: int) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.s.write(p.encode_message(t, seq, **fields))
        return seq

    def expect(self, t: MsgType, timeout: float = 2.0) -> p.Frame:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, f in enumerate(self.backlog):
                if f.type == t:
                    return self.backlog.pop(i)
            self.backlog += self.dec.feed(self.s.read(self.s.in_waiting or 1))
        raise AssertionError(f"no {t.name} from the MCU")

    def close(self) -> None:
        self.s.close()


@pytest.fixture
def raw(sim: McuSimulator) -> Iterator[RawPort]:
    r = RawPort(sim.port)
    yield r
    r.close()


def test_handshake(link: BridgeLink) -> None:
    assert link.info is not None
    assert link.info.proto == p.PROTOCOL_VERSION
    assert link.info.queue_capacity == 16 and link.info.gate_count == 8
    st = link.status()
    assert st["state"] == "LINKED"
    assert st["crc_errors"] == 0
    assert link.ping() > 0


def test_queue_and_fire_at_target(sim: McuSimulator, link: BridgeLink, gates: Gates) -> None:
    fired: list[FiredEvent] = []
    link.add_fired_listener(fired.append)
    wait_for(lambda: link.counters["rx_frames"] > 5)
    base = int(link.encoder_count_at(time.monotonic()))
    targets = {i: base + 300 + 40 * i for i in range(12)}
    for i, t in targets.items():
        assert link.queue_eject(i, i % 8, t, 3) == QueueResult.QUEUED
    wait_for(lambda: len(fired) == 12)
    assert {e.item_id: e.target_count for e in fired} == targets
    assert all(e.actual_count == e.target_count for e in fired)
    assert sorted(c for _, c in gates.rises()) == sorted(targets.values())
    for e in fired:
        # the fire time on the MCU clock maps back to the fire count (loosely: clock mapping, not timing)
        assert abs(link.encoder_count_at(e.host_ts) - e.actual_count) < 25
    wait_for(lambda: not gates.energised())


def test_late_and_full(sim: McuSimulator, link: BridgeLink) -> None:
    wait_for(lambda: link.counters["rx_frames"] > 5)
    now = int(link.encoder_count_at(time.monotonic()))
    assert link.queue_eject(1, 0, now - 10, 5) == QueueResult.LATE
    far = now + 10 * int(SPEED)
    results = [link.queue_eject(100 + i, 1, far + i, 5) for i in range(17)]
    assert results[:16] == [QueueResult.QUEUED] * 16 and results[16] == QueueResult.FULL
    assert link.cancel(100) and not link.cancel(100)
    assert link.queue_eject(200, 1, far + 50, 5) == QueueResult.QUEUED
    with pytest.raises(ValueError, match="gate 8 does not exist"):
        link.queue_eject(300, 8, far, 5)
    assert link.safe_state() == 16


def test_duplicate_never_fires_twice(sim: McuSimulator, raw: RawPort, gates: Gates) -> None:
    raw.send(MsgType.HELLO)
    hello = raw.expect(MsgType.HELLO_REPLY).fields()
    target = hello["count"] + 1000
    seq = raw.send(MsgType.QUEUE_EJECT, item_id=7, gate=2, fire_at_count=target, pulse_ms=5)
    for _ in range(3):  # the same frame again, as a retry after a lost reply would send it
        raw.send(MsgType.QUEUE_EJECT, seq=seq, item_id=7, gate=2, fire_at_count=target, pulse_ms=5)
    replies = [raw.expect(MsgType.QUEUE_REPLY).fields() for _ in range(4)]
    assert [r["acked_seq"] for r in replies] == [seq] * 4
    assert all(r["result"] == Result.OK for r in replies)
    assert [r["queue_depth"] for r in replies] == [1] * 4
    # the same item under a new sequence number is not queued twice either
    raw.send(MsgType.QUEUE_EJECT, item_id=7, gate=2, fire_at_count=target, pulse_ms=5)
    assert raw.expect(MsgType.QUEUE_REPLY).fields()["queue_depth"] == 1
    assert raw.expect(MsgType.FIRED).fields()["actual"] == target
    time.sleep(0.05)
    raw.send(MsgType.STATUS)
    st = raw.expect(MsgType.STATUS_REPLY).fields()
    assert st["fired"] == 1 and st["duplicates"] == 4
    assert gates.rises() == [(2, target)]


def test_retries_with_lost_acks_fire_once(sim: McuSimulator, gates: Gates) -> None:
    # a 10 µs ack timeout: the link re-sends before any reply can arrive, as if replies were lost
    with BridgeLink(sim.port, ack_timeout_s=1e-5, retries=50, heartbeat_s=1.0) as link:
        base = link.info and int(link.encoder_count_at(time.monotonic()))
        assert base is not None
        for i in range(8):
            assert link.queue_eject(i, i, base + 200 + 10 * i, 2) == QueueResult.QUEUED
        assert link.counters["retries"] > 0
        wait_for(lambda: len(gates.rises()) == 8)
        time.sleep(0.1)
        assert len(gates.rises()) == 8
        assert sim.mcu_counters["duplicates"] > 0
        assert [a for _, _, _, a in sim.fired_log] == [base + 200 + 10 * i for i in range(8)]


def test_failsafe_after_host_silence(sim: McuSimulator, raw: RawPort, gates: Gates) -> None:
    raw.send(MsgType.HELLO)
    c = raw.expect(MsgType.HELLO_REPLY).fields()["count"]
    raw.send(MsgType.QUEUE_EJECT, item_id=1, gate=0, fire_at_count=c + int(SPEED * 2), pulse_ms=5)
    assert raw.expect(MsgType.QUEUE_REPLY).fields()["result"] == Result.OK
    raw.send(MsgType.TEST_PULSE, gate=3, pulse_ms=2000)
    raw.expect(MsgType.TEST_PULSE_REPLY)
    assert gates.energised() == {3}
    # now silence: the MCU must flush and de-energise on its own
    fs = raw.expect(MsgType.FAILSAFE).fields()
    assert fs == {"reason": p.FailsafeReason.HOST_SILENT, "flushed": 1}
    assert gates.energised() == set()
    raw.send(MsgType.STATUS)
    st = raw.expect(MsgType.STATUS_REPLY).fields()
    assert st["state"] == McuState.FAILSAFE and st["queue_depth"] == 0 and st["gates"] == 0
    raw.send(MsgType.QUEUE_EJECT, item_id=2, gate=0, fire_at_count=st["count"] + 100, pulse_ms=5)
    assert raw.expect(MsgType.QUEUE_REPLY).fields()["result"] == Result.NOT_LINKED
    assert sim.fired_log == []


def test_link_recovers_from_failsafe(sim: McuSimulator, gates: Gates) -> None:
    # heartbeats rarer than the 500 ms fail-safe: the MCU goes safe between them and the link relinks
    with BridgeLink(sim.port, heartbeat_s=0.8) as link:
        wait_for(lambda: link.counters["failsafes"] >= 1 and link.counters["relinks"] >= 1)
        base = int(link.encoder_count_at(time.monotonic()))
        assert link.queue_eject(5, 1, base + 200, 2) == QueueResult.QUEUED
        wait_for(lambda: gates.rises() == [(1, base + 200)])


def test_recovery_after_mcu_reset(sim: McuSimulator, link: BridgeLink, gates: Gates) -> None:
    events: list[str] = []
    link.add_event_listener(lambda kind, _: events.append(kind))
    epoch = link.epoch
    wait_for(lambda: sim.count() > 1000)
    base = int(link.encoder_count_at(time.monotonic()))
    assert link.queue_eject(1, 0, base + 2000, 5, epoch=epoch) == QueueResult.QUEUED
    phys_at_reset = sim.count()
    sim.reset()
    wait_for(lambda: "relinked" in events)
    assert link.epoch == epoch + 1 and link.counters["mcu_resets"] == 1
    with pytest.raises(BridgeReset):
        link.queue_eject(2, 0, base + 2500, 5, epoch=epoch)
    wait_for(lambda: link.counters["rx_frames"] > 0 and link.status()["state"] == "LINKED")
    wait_for(lambda: len(link._enc_t) > 3)
    new_base = int(link.encoder_count_at(time.monotonic()))
    assert abs(new_base - (sim.count() - phys_at_reset)) < 100  # the MCU counts from 0 again after a reboot
    assert link.queue_eject(3, 4, new_base + 300, 5, epoch=link.epoch) == QueueResult.QUEUED
    wait_for(lambda: any(item == 3 for item, *_ in sim.fired_log))
    assert [item for item, *_ in sim.fired_log] == [3]  # item 1 died with the reboot: default bin
    assert sim.fired_log[0][3] == new_base + 300


def test_close_leaves_mcu_safe(sim: McuSimulator, gates: Gates) -> None:
    link = BridgeLink(sim.port).connect()
    base = int(link.encoder_count_at(time.monotonic()))
    link.queue_eject(1, 0, base + 5000, 5)
    link.test_pulse(6, 1500)
    assert gates.energised() == {6}
    link.close()
    assert sim._queue == [] and gates.energised() == set()


def test_unopenable_port() -> None:
    with pytest.raises(BridgeNotConnected, match="cannot open"):
        BridgeLink("/dev/does-not-exist").connect()


def test_silent_port_times_out() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with pytest.raises(BridgeTimeout, match="HELLO"):
            BridgeLink(os.ttyname(slave), ack_timeout_s=0.01, retries=1).connect()
    finally:
        os.close(master)
        os.close(slave)
