"""`edgesort bench bridge [--firmware] --json FILE`: the serial link's figures, measured in one run.

1. Round trips: HEARTBEAT and QUEUE_EJECT (+ CANCEL, to keep the queue empty), p50/p99, next to the wire time
   of the same request and reply bytes at the link's baud (8N1) (and at simavr's UART model for --firmware). Each is
   measured with the MCU's encoder stream on (as in service) and off (the bare request/reply).
2. Fire position error: ejections queued ahead of a running belt; actual - target counts from the MCU's FIRED
   reports and, for the firmware, from the harness's own record of the gate pin edges.
3. Corruption: valid ejections interleaved with frames hit by single-bit flips, byte bursts and truncation;
   a misfire is any gate edge that is not a valid ejection at its target count, or a valid one firing twice.
   It must be 0.
4. Bursts: eight QUEUE_EJECTs in flight at once, as the sorter sends one frame's decisions; how many had to be
   sent again and how many bytes the MCU lost to its full receive ring (whether it keeps up at this baud).

The MCU is the Python simulator, or with --firmware the real firmware ELF in the simavr harness.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p
from firmware_bridge.link import BridgeLink, FiredEvent, QueueResult
from firmware_bridge.protocol import MsgType


def simavr_us_per_byte(baud: int = p.DEFAULT_BAUD, f_cpu: int = 16_000_000) -> float:
    """simavr's time for one byte of the firmware's UART: the rate its UBRR (U2X, rounded as the firmware's
    Makefile rounds it) really gives, 11 bits counted per byte (115200: UBRR 16, 117647 baud, 93.5 us)."""
    ubrr = (f_cpu + 4 * baud) // (8 * baud) - 1
    return 1e6 / (f_cpu // 8 // (ubrr + 1) // 11)


def bursts(link: BridgeLink, n: int, size: int = 8) -> dict[str, Any]:
    """n bursts of `size` QUEUE_EJECTs in flight at once (`queue_ejects`, as the sorter sends one frame's
    decisions), each cancelled after: how many the link had to send again, and the bytes the MCU lost to a full
    receive ring (its `overruns`). Shows whether the MCU keeps up with the link's busiest traffic at this rate."""
    before_host, before_mcu = link.counters["retries"], link.status()
    for k in range(n):
        far = int(link.encoder_count_at(time.monotonic())) + 10_000_000
        items = [0x6000_0000 + k * size + i for i in range(size)]
        link.queue_ejects([(item, i % 8, far + 10 * i, 5) for i, item in enumerate(items)])
        for item in items:
            link.cancel(item)
    after = link.status()
    return {"bursts": n, "size": size, "resent": link.counters["retries"] - before_host,
            "mcu_overruns": after["overruns"] - before_mcu["overruns"],
            "mcu_crc_errors": after["crc_errors"] - before_mcu["crc_errors"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firmware", action="store_true", help="the real firmware in simavr (else Python MCU)")
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--samples", type=int, default=400, help="round trips per message type and stream mode")
    parser.add_argument("--ejections", type=int, default=300, help="ejections for the fire position error")
    parser.add_argument("--corrupt", type=int, default=1000, help="corrupted frames in the corruption run")
    parser.add_argument("--speed", type=float, default=5000.0, help="belt encoder ticks per second")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--bursts", type=int, default=100, help="bursts of 8 QUEUE_EJECTs in flight at once")
    parser.add_argument("--baud", type=int, default=p.DEFAULT_BAUD,
                        help="the UART rate: the wire-time columns, and the firmware's build with --firmware")
    parser.add_argument(
        "--retries", type=int, default=p.RETRIES, help="link retries (raise on a loaded machine: CI uses 20)"
    )


class _Gates:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rises: list[tuple[int, int]] = []

    def __call__(self, gate: int, on: bool, count: int) -> None:
        if on:
            with self.lock:
                self.rises.append((gate, count))


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def _frame_len(t: MsgType, **fields: int) -> int:
    return len(p.encode_message(t, 0xFFFF, **fields))


def round_trips(link: BridgeLink, n: int, firmware: bool, baud: int = p.DEFAULT_BAUD) -> dict[str, Any]:
    assert link.info is not None
    out: dict[str, Any] = {}
    rep = {"acked_seq": 0xFFFF, "state": 1, "queue_depth": 0, "mcu_us": 1 << 31, "count": 1 << 31}
    hb_bytes = _frame_len(MsgType.HEARTBEAT) + _frame_len(MsgType.HEARTBEAT_REPLY, **rep)
    q = {"item_id": 1 << 31, "gate": 1, "fire_at_count": 1 << 31, "pulse_ms": 20}
    qr = {"acked_seq": 0xFFFF, "result": 0, "queue_depth": 1, "count": 1 << 31}
    q_bytes = _frame_len(MsgType.QUEUE_EJECT, **q) + _frame_len(MsgType.QUEUE_REPLY, **qr)
    for stream_ms in (p.ENCODER_STREAM_PERIOD_MS, 0):
        link.configure(stream_period_ms=stream_ms)
        time.sleep(0.05)
        hb, qe = [], []
        for i in range(n):
            hb.append(link.ping() * 1000)
            far = int(link.encoder_count_at(time.monotonic())) + 10_000_000
            t0 = time.monotonic()
            link.queue_eject(0x7000_0000 + i, 1, far, 20)
            qe.append((time.monotonic() - t0) * 1000)
            link.cancel(0x7000_0000 + i)
        for name, xs, nbytes in (("HEARTBEAT", hb, hb_bytes), ("QUEUE_EJECT", qe, q_bytes)):
            wire = p.wire_time_s(nbytes, baud) * 1000
            row = {
                "n": len(xs),
                "p50_ms": round(statistics.median(xs), 3),
                "p99_ms": round(_pct(xs, 99), 3),
                "bytes_on_wire": nbytes,
                "wire_ms_8n1": round(wire, 3),
                "p50_over_wire": round(statistics.median(xs) / wire, 2),
            }
            if firmware:
                row["wire_ms_simavr_uart"] = round(nbytes * simavr_us_per_byte(baud) / 1000, 3)
            out[f"{name} stream={'on' if stream_ms else 'off'}"] = row
    link.configure(stream_period_ms=p.ENCODER_STREAM_PERIOD_MS)
    return out


def mapping_error(link: BridgeLink, sim: Any, n: int, speed: float) -> dict[str, Any]:
    """encoder_count_at(now) against the simulator's own encoder count read at the same moment: how far the
    host's map from its clock to belt position is off (what a frame's capture time turns into)."""
    errs = []
    for _ in range(n):
        t = time.monotonic()
        errs.append(link.encoder_count_at(t) - sim.count())
        time.sleep(0.005)
    return {
        "n": n,
        "p50_counts": round(statistics.median(errs), 2),
        "p1_counts": round(_pct(errs, 1), 2),
        "p99_counts": round(_pct(errs, 99), 2),
        "p50_ms": round(statistics.median(errs) / speed * 1000, 3),
    }


def fire_errors(link: BridgeLink, gates: _Gates, n: int, speed: float) -> dict[str, Any]:
    fired: list[FiredEvent] = []
    link.add_fired_listener(fired.append)
    spacing = max(20, int(speed / 50))  # 50 ejections per second
    lookahead = 12 * spacing
    planned: dict[int, tuple[int, int]] = {}
    late = 0
    with gates.lock:
        gates.rises.clear()
    nxt = int(link.encoder_count_at(time.monotonic())) + lookahead
    item = 0
    while item < n:
        now = link.encoder_count_at(time.monotonic())
        while item < n and nxt - now < lookahead:
            if link.queue_eject(item, item % 8, nxt, 2) == QueueResult.QUEUED:
                planned[item] = (item % 8, nxt)
                item += 1
            else:
                late += 1
                nxt = max(nxt, int(link.encoder_count_at(time.monotonic())) + spacing)
            nxt += spacing
        time.sleep(0.01)
    _wait(lambda: len([e for e in fired if e.item_id in planned]) >= n, 30)
    _wait(lambda: len(gates.rises) >= n, 5)
    mine = [e for e in fired if e.item_id in planned]
    err = Counter(e.actual_count - e.target_count for e in mine)
    with gates.lock:
        rises = list(gates.rises)
    # the gate log counts the encoder edges the simulator made; with no MCU reset in this run they are the
    # MCU's counts too (both start at 0 when the simulator starts)
    targets = sorted(t for _, t in planned.values())
    pin_err: Counter[int] = Counter()
    for _, c in rises:
        i = bisect.bisect_left(targets, c)
        nearest = min((targets[j] for j in (i - 1, i) if 0 <= j < len(targets)), key=lambda t: abs(t - c))
        pin_err[c - nearest] += 1
    return {
        "ejections": n,
        "late_replanned": late,
        "fired_reports": len(mine),
        "fired_error_counts": {str(k): v for k, v in sorted(err.items())},
        "gate_pin_edges": len(rises),
        "gate_pin_error_counts": {str(k): v for k, v in sorted(pin_err.items())},
        "max_abs_error": max([abs(k) for k in err] + [abs(k) for k in pin_err] + [0]),
        "speed_ticks_per_s": speed,
        "spacing_counts": spacing,
    }


def _corrupt(frame: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["bit", "bit", "burst", "truncate"])
    bad = bytearray(frame)
    if kind == "bit":
        bit = rng.randrange(len(bad) * 8)
        bad[bit // 8] ^= 1 << (bit % 8)
    elif kind == "burst":
        start = rng.randrange(len(bad) - 1)
        for k in range(start, min(len(bad), start + rng.randint(2, 4))):
            bad[k] = rng.randrange(256)
    else:
        bad = bad[: rng.randrange(1, len(bad) - 1)]
    return kind, bytes(bad) + b"\x00"  # a closing 0x00: a hit delimiter must not swallow the next frame


def corruption(link: BridgeLink, gates: _Gates, n: int, speed: float, rng: random.Random) -> dict[str, Any]:
    fired: list[FiredEvent] = []
    link.add_fired_listener(fired.append)
    before = link.status()
    with gates.lock:
        gates.rises.clear()
    start = int(link.encoder_count_at(time.monotonic()))
    horizon = start + int(speed * 1.0)
    valid: dict[int, tuple[int, int]] = {}
    kinds: Counter[str] = Counter()
    seq = 40000
    for k in range(n):
        item = 0x5000_0000 + k
        target = horizon + 50 * k
        # keep at most 1 s of belt planned, so the valid ejections never fill the MCU queue
        _wait(lambda t=target: t - link.encoder_count_at(time.monotonic()) < speed, 10)
        gate = k % 8
        good = p.encode_message(MsgType.QUEUE_EJECT, seq, item_id=item, gate=gate, fire_at_count=target, pulse_ms=1)
        seq = (seq + 1) & 0xFFFF
        kind, bad = _corrupt(good, rng)
        kinds[kind] += 1
        link._write(bad)  # bypasses the link's retry: the MCU must reject it on its own
        if k % 10 == 0:  # every tenth planned position gets a valid ejection through the link
            vitem = 0x6000_0000 + k
            if link.queue_eject(vitem, gate, target + 25, 1) == QueueResult.QUEUED:
                valid[vitem] = (gate, target + 25)
    last = horizon + 50 * n + 100
    _wait(lambda: link.encoder_count_at(time.monotonic()) > last, 60)
    time.sleep(0.1)
    after = link.status()
    with gates.lock:
        rises = list(gates.rises)
    expected = Counter(valid.values())
    got = Counter((g, c) for g, c in rises)
    misfires = sum((got - expected).values())
    fired_valid = sum(1 for e in fired if e.item_id in valid and e.actual_count == e.target_count)
    rejected = sum(after[k] - before[k] for k in ("crc_errors", "cobs_errors", "overruns"))
    return {
        "corrupted_frames": n,
        "corruption_kinds": dict(kinds),
        "valid_ejections_queued": len(valid),
        "valid_fired_at_target": fired_valid,
        "fired_reports_of_corrupted_items": sum(1 for e in fired if 0x5000_0000 <= e.item_id < 0x6000_0000),
        "gate_edges": len(rises),
        "misfires": misfires,
        "mcu_rejected_frames": rejected,
        "mcu_queue_full": after["full"] - before["full"],
    }


def run(args: argparse.Namespace) -> int:
    gates = _Gates()
    sim: Any
    if args.firmware:
        from firmware_bridge.simavr import FirmwareSimulator, SimavrError

        sim = FirmwareSimulator(on_gate=gates, baud=args.baud)
        try:
            sim.start()
        except SimavrError as exc:
            print(f"edgesort bench bridge: {exc}", file=sys.stderr)
            return 1
    else:
        from firmware_bridge.mcu_sim import McuSimulator

        sim = McuSimulator(on_gate=gates)
        sim.start()
    rng = random.Random(args.seed)
    try:
        sim.set_speed(args.speed)
        with BridgeLink(sim.port, baud=args.baud, retries=args.retries) as link:
            _wait(lambda: link.counters["rx_frames"] > 5, 5)
            rt = round_trips(link, args.samples, args.firmware, args.baud)
            me = mapping_error(link, sim, args.samples, args.speed)
            fe = fire_errors(link, gates, args.ejections, args.speed)
            cr = corruption(link, gates, args.corrupt, args.speed, rng)
            bu = bursts(link, args.bursts)
            counters = link.counters
            mcu = link.status()
    finally:
        sim.stop()
    result = {
        "mcu": "firmware ATmega328P in simavr" if args.firmware else "Python MCU simulator",
        "baud": args.baud if args.firmware else None,  # the Python MCU has no UART
        "round_trip": rt,
        "encoder_mapping_error": me,
        "fire_position": fe,
        "corruption": cr,
        "bursts": bu,
        "host_counters": counters,
        "mcu_status": mcu,
        "harness": getattr(sim, "stats", {}),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    for name, row in rt.items():
        print(
            f"{name:28s} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  "
            f"wire {row['wire_ms_8n1']:.3f} ms"
        )
    print(
        f"encoder_count_at - simulator count: p50 {me['p50_counts']} counts, "
        f"p1..p99 {me['p1_counts']}..{me['p99_counts']}"
    )
    print(f"fire error (actual - target): {fe['fired_error_counts']}, gate pins: {fe['gate_pin_error_counts']}")
    print(
        f"corrupted frames {cr['corrupted_frames']}: misfires {cr['misfires']}, "
        f"rejected by the MCU {cr['mcu_rejected_frames']}"
    )
    print(f"{bu['bursts']} bursts of {bu['size']} ejections in flight: {bu['resent']} sent again, "
          f"{bu['mcu_overruns']} bytes lost to the MCU's full receive ring")
    return 0 if cr["misfires"] == 0 and fe["max_abs_error"] <= 1 else 1
