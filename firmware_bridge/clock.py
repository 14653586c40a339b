"""The MCU's clock mapped to the host's, from the heartbeat round trips (NTP's clock filter, simplified).

Each round trip brackets the moment the MCU read its clock between our send and our receive, so it gives the
offset (host - MCU) to within its round-trip time. Of the recent samples the one believed is the one with the
smallest error bound now: half its round trip plus what the two clocks may have drifted apart since it was
taken. A fresh sample is not always the best: when the host is starved for seconds (a loaded VM) every round
trip is long, and a sample taken 3 s ago with a 1 ms round trip still beats a new one with 150 ms, whose
offset may be 75 ms off. (A plain "minimum round trip within the last 2 s" filter, used before, switched to
such a sample and moved every frame's position by up to 37 mm at 0.5 m/s.)

No library does this for a serial link (NTP and PTP clients discipline the system clock over a network).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

WINDOW_S = 10.0  # samples older than this are dropped
# How fast the MCU's clock may drift from ours: a ceramic resonator's tolerance (0.5%; a crystal is 50 ppm).
MAX_SKEW = 0.005
PAUSES_KEPT = 16  # located pauses remembered for mapping older host times (10 s of frames at most matter)
JUMP_S = 0.001  # beyond the round trips' uncertainty: the MCU clock jumped (a reboot not yet seen, a paused sim)


@dataclass(frozen=True, slots=True)
class ClockJump:
    """The MCU clock moved against ours by `shift_s` (host - MCU offset, new minus old) at some moment between
    `since` (host time of the last round trip that agreed with the mapping) and `detected`. Host times mapped in
    that window may be off by up to |shift_s| of MCU time."""

    since: float
    detected: float
    shift_s: float
    offset_before: float = 0.0


@dataclass(frozen=True, slots=True)
class ClockPause:
    """The MCU's clock stood still at MCU time `mcu_s` (a paused simulator, a stalled MCU) while the host's ran
    on: from host time mcu_s + offset_before to mcu_s + offset_after."""

    mcu_s: float
    offset_before: float
    offset_after: float


def locate_pauses(
    mcu_s: Sequence[float], rx: Sequence[float], offset_before: float, offset_after: float, margin_s: float
) -> list[ClockPause]:
    """Where the MCU's clock stopped, from the ENCODER stream around a jump that put it behind by
    offset_after - offset_before: one pause or several (a starved simulator can pause twice before a heartbeat
    shows the first). `mcu_s` and `rx` are the samples' MCU times and host receive times, in MCU order.

    A sample's lag (rx - mcu_s) is the offset that held when it was sent plus its delay to the host, which is
    never negative; offsets only grow through pauses. So the smallest lag of a sample and all later ones (the
    lower envelope from the future) never exceeds any earlier sample's offset plus its delay, never falls
    below its own offset, and a delayed sample (the host reader held up) does not raise it while a prompt one
    follows. Each rise of the envelope by more than margin_s between two samples is a pause between their MCU
    times; the midpoint is taken, so a host time near a stop maps at most half a stream period off. The last
    rise is the one every later sample confirms: it ends at offset_after; the earlier ones take their rise from
    the envelope. Empty when no sample tells (none was sent before the pause)."""
    env: list[float] = []
    low = float("inf")
    for m, r in zip(reversed(mcu_s), reversed(rx), strict=True):
        low = min(low, r - m)
        env.append(low)
    env.reverse()
    pauses: list[ClockPause] = []
    off = offset_before
    for i in range(len(env) - 1):
        if env[i] >= offset_after - margin_s:
            break  # this sample and every later one may have been sent after the last pause
        rise = env[i + 1] - env[i]
        if rise <= margin_s:
            continue
        new = offset_after if env[i + 1] >= offset_after - margin_s else min(off + rise, offset_after)
        pauses.append(ClockPause((mcu_s[i] + mcu_s[i + 1]) / 2, off, new))
        off = new
        if new == offset_after:
            return pauses
    if env and env[-1] < offset_after - margin_s:  # even the newest sample was sent before the last pause
        pauses.append(ClockPause(mcu_s[-1], off, offset_after))
        return pauses
    return []  # the rises do not add up to the jump: not located


@dataclass(frozen=True, slots=True)
class ClockSample:
    host_rx: float
    rtt: float
    offset: float  # host time - MCU time

    def error_bound(self, now: float) -> float:
        return self.rtt / 2 + max(0.0, now - self.host_rx) * MAX_SKEW


class ClockMapping:
    """offset = host - MCU time, from NTP-style round-trip samples; `jumps` counts restarts, `last_jump` is the
    latest one."""

    def __init__(self) -> None:
        self.samples: deque[ClockSample] = deque()
        self.offset: float | None = None
        self.jumps = 0
        self.last_jump: ClockJump | None = None
        self.pauses: deque[ClockPause] = deque(maxlen=PAUSES_KEPT)

    def to_host(self, mcu_s: float) -> float:
        """The host time of MCU time mcu_s: the inverse of to_mcu (the offset that held at that MCU time)."""
        assert self.offset is not None
        off = self.offset
        for pause in reversed(self.pauses):
            if mcu_s >= pause.mcu_s:
                return mcu_s + off
            off = pause.offset_before
        return mcu_s + off

    def to_mcu(self, host_ts: float) -> float:
        """The MCU's clock at host time host_ts: through the current offset, or, for a time before a located
        pause ended, through the offset that held then (and the MCU's frozen clock during the pause)."""
        assert self.offset is not None
        off = self.offset
        for pause in reversed(self.pauses):
            if host_ts - off >= pause.mcu_s:
                return host_ts - off  # after this pause
            if host_ts - pause.offset_before >= pause.mcu_s:
                return pause.mcu_s  # during it: the MCU's clock stood still
            off = pause.offset_before
        return host_ts - off

    def best(self, now: float) -> ClockSample | None:
        return min(self.samples, key=lambda s: s.error_bound(now), default=None)

    def add(self, t_send: float, t_recv: float, mcu_s: float, req_len: int, rep_len: int) -> float:
        """One round trip: sent at t_send, answered at t_recv (host seconds), the MCU's clock read mcu_s in
        between. The round trip is split in proportion to the frame lengths (UART wire time dominates; on a pty
        both parts are tiny). Returns the offset now believed."""
        rtt = t_recv - t_send
        sample = ClockSample(t_recv, rtt, t_send + rtt * req_len / (req_len + rep_len) - mcu_s)
        best = self.best(t_recv)
        if best is not None and abs(sample.offset - best.offset) > rtt + best.error_bound(t_recv) * 2 + JUMP_S:
            # each sample puts the offset within its round trip; two that cannot both hold mean the MCU clock
            # jumped against ours: start afresh. It jumped after the MCU read of the newest sample the new
            # offset cannot explain, which came after that sample's send. A newer sample whose long round trip
            # fits both offsets (sent before a pause, answered after it, on a starved host) says nothing about
            # when: taking its send time as the start would leave host times before it mapped wrong, unflagged.
            old = [s for s in self.samples if abs(s.offset - sample.offset) > s.rtt + rtt + JUMP_S]
            last = old[-1] if old else self.samples[-1]
            self.last_jump = ClockJump(last.host_rx - last.rtt, t_recv, sample.offset - best.offset, best.offset)
            self.samples.clear()
            self.jumps += 1
        self.samples.append(sample)
        while self.samples[0].host_rx < t_recv - WINDOW_S:
            self.samples.popleft()
        chosen = self.best(t_recv)
        assert chosen is not None
        self.offset = chosen.offset
        return self.offset
