"""Ejections scheduled on the encoder against the Python MCU simulator over a real pty and the real link."""

from __future__ import annotations

import time

import pytest

from device.config import DeviceConfig
from device.sorting.scheduling import EjectionScheduler
from firmware_bridge.link import BridgeLink
from firmware_bridge.mcu_sim import McuSimulator

TPM = 2.0  # ticks per mm (the default config)


@pytest.fixture
def line():
    gates: list[tuple[int, bool, int]] = []
    sim = McuSimulator(on_gate=lambda g, on, c: gates.append((g, on, c)))
    port = sim.start()
    sim.set_speed(1000.0)  # 0.5 m/s at 2 ticks/mm
    link = BridgeLink(port).connect()
    alarms: list[str] = []
    sched = EjectionScheduler(DeviceConfig(), link, alarm=lambda kind, msg, **kw: alarms.append(kind))
    yield sim, link, sched, gates, alarms
    link.close()
    sim.stop()


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_ejection_fires_centred_on_the_item_and_is_reconciled(line):
    sim, _link, sched, gates, alarms = line
    gate0_mm = 400.0
    # an item whose centre reaches gate 0 about 0.3 s from now: x = u + count / tpm
    u = gate0_mm - (sim.count() + 300) / TPM
    assert sched.schedule(7, u, 0, ticks_per_s=1000.0) == "queued"
    assert wait_for(lambda: sched.stats.fired == 1)
    assert wait_for(lambda: any(g == 0 and not e for g, e, _c in gates))  # the pulse ends 40 ms later
    on = [c for g, e, c in gates if g == 0 and e]
    off = [c for g, e, c in gates if g == 0 and not e]
    centre = (gate0_mm - u) * TPM
    assert on and off and on[0] < centre < off[0]  # the pulse spans the item's passage
    assert list(sched.stats.fire_errors) == [0]
    assert not sched.pending and alarms == []


def test_a_target_already_passed_is_late_and_raised(line):
    sim, _link, sched, _gates, alarms = line
    u = 400.0 - (sim.count() - 200) / TPM
    assert sched.schedule(8, u, 0, ticks_per_s=1000.0) == "late"
    assert sched.stats.late == 1 and alarms == ["eject_late"]


def test_an_ejection_lost_in_an_mcu_reset_counts_as_missed(line):
    sim, _link, sched, _gates, alarms = line
    u = 400.0 - (sim.count() + 400) / TPM
    assert sched.schedule(9, u, 0, ticks_per_s=1000.0) == "queued"
    sim.reset()  # the MCU reboots: its queue is gone
    assert wait_for(lambda: sim.count() > (400.0 - u) * TPM + 400)
    assert sched.reconcile(sim.count()) and sched.stats.missed == 1
    assert "eject_missed" in alarms and sched.stats.fired == 0
