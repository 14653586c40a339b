"""Ejections scheduled on the belt encoder, and every one reconciled with the MCU's FIRED report.

The host never times a gate. It computes the encoder count at which the item's centre reaches the gate
(the item's belt coordinate plus the gate's distance), starts the pulse half a pulse earlier so the pusher is
out while the item passes, and sends QUEUE_EJECT; the MCU fires at that count and reports FIRED with the
count it actually fired at. A queued ejection with no FIRED report once the belt is past its target is
a missed ejection, raised as an alarm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from device.config import DeviceConfig

log = logging.getLogger(__name__)

MISSED_AFTER_MM = 150.0  # belt travel past the target with no FIRED report before an ejection counts as missed
FIRED_KEPT = 10_000  # fired ejections remembered for reports (a daemon runs for weeks: the record is bounded)


@dataclass
class Pending:
    item_id: int
    gate: int
    fire_at: int
    queued_ts: float
    how: str = "decided"  # or "requeued" (after a clock jump) or "released" (held back, then queued after all)


@dataclass(frozen=True, slots=True)
class Fired:
    """One ejection the MCU reported fired: where it was aimed, where it fired, and how it came to be queued."""

    item_id: int
    gate: int
    fire_at: int
    actual: int
    how: str


@dataclass
class EjectionStats:
    queued: int = 0
    fired: int = 0
    late: int = 0
    full: int = 0
    failed: int = 0  # the link gave up after its retries
    missed: int = 0
    late_reports: int = 0  # FIRED arrived after the ejection had been counted missed (a slow host)
    withdrawn: int = 0  # cancelled on the MCU: decided from a position found wrong (a clock jump)
    requeued: int = 0  # queued again once the item's position was trusted (also counted in queued)
    # queued after all: held back (a neighbour in the sweep, a slip) on positions a clock jump proved wrong
    released: int = 0
    stood_down: int = 0  # withdrawn in a burst of clock jumps (aimed from positions inside it): default bin
    fired_log: deque[Fired] = field(default_factory=lambda: deque(maxlen=FIRED_KEPT))

    @property
    def fire_errors(self) -> list[int]:
        """actual - target counts of the fired ejections (fired_log's)."""
        return [f.actual - f.fire_at for f in list(self.fired_log)]

    def as_dict(self) -> dict[str, object]:
        return {
            "queued": self.queued, "fired": self.fired, "late": self.late, "full": self.full,
            "failed": self.failed, "missed": self.missed, "late_reports": self.late_reports,
            "withdrawn": self.withdrawn, "requeued": self.requeued, "released": self.released,
            "stood_down": self.stood_down,
        }


class EjectionScheduler:
    def __init__(self, cfg: DeviceConfig, link, alarm: Callable[..., None] | None = None) -> None:
        self.tpm = cfg.line.ticks_per_mm
        self.gates = {g.id: g for g in cfg.line.gates}
        self.link = link
        self.alarm = alarm or (lambda kind, message, **kw: log.warning("%s: %s", kind, message))
        self.stats = EjectionStats()
        self.pending: dict[int, Pending] = {}
        self._missed: dict[int, Pending] = {}  # counted missed; a late FIRED report still settles them
        self._lock = threading.Lock()
        link.add_fired_listener(self._on_fired)

    def target_count(self, u_mm: float, gate: int, ticks_per_s: float) -> int:
        """Encoder count at which to start the pulse so that it is centred on the item's passage."""
        g = self.gates[gate]
        centre = (g.distance_mm - u_mm) * self.tpm
        half_pulse = max(ticks_per_s, 0.0) * g.pulse_ms / 2000.0
        return round(centre - half_pulse)

    def schedule(self, item_id: int, u_mm: float, gate: int, ticks_per_s: float, epoch: int | None = None,
                 how: str = "decided") -> str:
        """Queue one ejection; returns the MCU's answer ('queued', 'late', 'full') or 'failed'.

        `epoch` is the link's MCU boot epoch the position was measured in: after a reboot the link refuses the
        stale count instead of firing at a wrong place. `how` is kept with it for reports (see Pending).
        """
        return self.schedule_many([(item_id, u_mm, gate)], ticks_per_s, epoch, how)[0]

    def schedule_many(self, requests: list[tuple[int, float, int]], ticks_per_s: float,
                      epoch: int | None = None, how: str = "decided") -> list[str]:
        """Queue the ejections (item_id, u_mm, gate) of one frame's decisions together (one round trip for all
        where the link can); one answer each, in order, as `schedule` gives."""
        plans = [(item_id, gate, self.target_count(u_mm, gate, ticks_per_s)) for item_id, u_mm, gate in requests]
        ejections = [(item_id, gate, fire_at, self.gates[gate].pulse_ms) for item_id, gate, fire_at in plans]
        results = self.link.queue_ejects(ejections, epoch=epoch)
        return [self._settle(*plan, result, how) for plan, result in zip(plans, results, strict=True)]

    def _settle(self, item_id: int, gate: int, fire_at: int, result: object, how: str) -> str:
        """Book one QUEUE_EJECT's answer: pending until FIRED, or an alarm."""
        from firmware_bridge.link import BridgeError  # light: pure Python, no hardware

        if isinstance(result, BridgeError):
            self.stats.failed += 1
            self.alarm("eject_failed", f"item {item_id}: QUEUE_EJECT to gate {gate} failed: {result}", item=item_id)
            return "failed"
        answer = str(getattr(result, "name", result)).lower()
        if answer == "queued":
            with self._lock:
                self.pending[item_id] = Pending(item_id, gate, fire_at, time.monotonic(), how)
            self.stats.queued += 1
        elif answer == "late":
            self.stats.late += 1
            self.alarm("eject_late", f"item {item_id}: the MCU says gate {gate} at count {fire_at} is already past",
                       item=item_id)
        else:
            self.stats.full += 1
            self.alarm("eject_full", f"item {item_id}: the MCU's ejection queue is full", item=item_id)
        return answer

    def withdraw(self, item_id: int) -> Pending | None:
        """CANCEL a pending ejection on the MCU; the Pending if it is withdrawn, None if there was none or the
        MCU no longer had it (it has fired: its FIRED report settles it as usual)."""
        from firmware_bridge.link import BridgeError  # light: pure Python, no hardware

        with self._lock:
            p = self.pending.get(item_id)
        if p is None:
            return None
        try:
            cancelled = self.link.cancel(item_id)
        except BridgeError as exc:
            self.alarm("eject_cancel_failed", f"item {item_id}: CANCEL of gate {p.gate} failed: {exc}", item=item_id)
            return None
        if not cancelled:
            return None
        with self._lock:
            self.pending.pop(item_id, None)
        self.stats.withdrawn += 1
        return p

    def _on_fired(self, ev) -> None:
        with self._lock:
            p = self.pending.pop(ev.item_id, None)
            late = self._missed.pop(ev.item_id, None) if p is None else None
        if late is not None:
            # the MCU did fire; its report came after the host gave up waiting (the host was starved)
            self.stats.missed -= 1
            self.stats.late_reports += 1
            p = late
        if p is None:
            log.warning("FIRED for item %s that is not pending (gate %s)", ev.item_id, ev.gate)
            return
        self.stats.fired += 1
        with self._lock:  # a report copies the log meanwhile (fired_log), and a deque refuses to change under it
            self.stats.fired_log.append(Fired(p.item_id, p.gate, p.fire_at, int(ev.actual_count), p.how))

    def fired_log(self) -> list[Fired]:
        """The ejections reported fired, oldest first (the last FIRED_KEPT)."""
        with self._lock:
            return list(self.stats.fired_log)

    def reconcile(self, count_now: float) -> list[Pending]:
        """Count as missed every pending ejection whose target the belt has passed without a FIRED report."""
        limit = MISSED_AFTER_MM * self.tpm
        with self._lock:
            missed = [p for p in self.pending.values() if count_now > p.fire_at + limit]
            for p in missed:
                del self.pending[p.item_id]
                self._missed[p.item_id] = p
        for p in missed:
            self.stats.missed += 1
            self.alarm("eject_missed", f"item {p.item_id}: gate {p.gate} did not report firing at count {p.fire_at}",
                       item=p.item_id, gate=p.gate)
        return missed
