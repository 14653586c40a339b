"""`edgesort bench outbox`: durable events per second through the outbox, as JSON.

Three figures per durability setting (mqtt.outbox_fsync true/false), measured side by side in one run:
- append: item_event() alone (no broker, as in an outage): how fast events become durable on this disk;
- end to end: item_event() -> SQLite -> publish -> PUBACK -> delete, through a real broker, timed from the
  first event to the moment the outbox is empty again;
- replay: a restart that finds the append step's backlog on disk, timed from start() until it is all
  acknowledged (connection set-up included).
Without --broker a private mosquitto is started on a free port when one is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from device.errors import EdgesortError

EVENT = {"item": 0, "grade": "M", "confidence": 0.93, "gate": 3, "outcome": "queued", "length_mm": 212.5}
BROKER_START_S = 10.0  # mosquitto binds within a second; slack for a loaded machine
DRAIN_TIMEOUT_S = 300.0  # end-to-end runs give up after this long (a broker that stopped acknowledging)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=5000, help="events per measurement")
    p.add_argument("--broker", help="mqtt://host:port to measure through (default: a private mosquitto)")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="where the outbox lives (default: a temporary folder); "
        "use the device's own disk (eMMC/SD/NVMe) for figures that mean something there",
    )
    p.add_argument("--json", type=Path, help="also write the JSON here")


@contextmanager
def _private_broker() -> Iterator[str | None]:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edgesort-bench-mqtt-") as d, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        conf = Path(d) / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_type error"]
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # as root mosquitto would switch users; this broker is private and temporary
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + BROKER_START_S
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise EdgesortError("the private mosquitto for the benchmark did not start") from None
                    time.sleep(0.05)  # waiting for mosquitto to bind
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _config(state: Path, url: str | None, fsync: bool) -> Any:
    from device.config import DeviceConfig

    return DeviceConfig.model_validate(
        {
            "device": {"id": "bench-0", "site": "bench"},
            "mqtt": {"url": url, "outbox_fsync": fsync, "telemetry_period_s": 3600},
            "paths": {"state_dir": str(state)},
        }
    )


def _emit(rep: Any, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        rep.item_event({**EVENT, "item": i})
        lat.append(time.perf_counter() - t0)
    return lat


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000.0


def _connected(rep: Any, url: str) -> Any:
    rep.start()
    deadline = time.monotonic() + BROKER_START_S
    while not rep.connected and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for the first CONNACK
    if not rep.connected:
        rep.stop(drain_s=0)
        raise EdgesortError(f"cannot connect to {url} for the benchmark")
    return rep


def _drained(rep: Any, n: int, t0: float) -> float:
    if not rep.wait_idle(DRAIN_TIMEOUT_S):
        rep.stop(drain_s=0)
        raise EdgesortError(f"the broker did not acknowledge {n} events within {DRAIN_TIMEOUT_S:.0f} s")
    dt = time.perf_counter() - t0
    rep.stop(drain_s=0)
    return round(n / dt, 1)


def _measure(root: Path, url: str | None, fsync: bool, n: int) -> dict[str, Any]:
    from device.fleet.reporter import FleetReporter

    out: dict[str, Any] = {"fsync": fsync}
    # 1. append only: no broker, the backlog grows as during an outage
    backlog = root / f"backlog-{fsync}"
    rep = FleetReporter(_config(backlog, None, fsync), versions={}, telemetry=dict)
    t0 = time.perf_counter()
    lat = _emit(rep, n)
    dt = time.perf_counter() - t0
    rep.stop()
    out.update(
        append_events_per_s=round(n / dt, 1),
        append_p50_ms=round(_pct(lat, 0.5), 3),
        append_p99_ms=round(_pct(lat, 0.99), 3),
        end_to_end_events_per_s=None,
        replay_events_per_s=None,
    )
    if url is None:
        return out
    # 2. end to end: emit as fast as possible while connected, until the broker has acknowledged everything
    rep = _connected(
        FleetReporter(_config(root / f"e2e-{fsync}", url, fsync), versions={}, telemetry=dict), url
    )
    t0 = time.perf_counter()
    _emit(rep, n)
    out["end_to_end_events_per_s"] = _drained(rep, n, t0)
    # 3. replay: a restart with the backlog of step 1 on disk, from CONNACK until the outbox is empty
    rep = FleetReporter(_config(backlog, url, fsync), versions={}, telemetry=dict)
    t0 = time.perf_counter()
    out["replay_events_per_s"] = _drained(_connected(rep, url), n, t0)
    return out


def run(args: argparse.Namespace) -> int:
    if args.events < 10:
        raise EdgesortError("--events must be at least 10")
    broker = _private_broker() if args.broker is None else _given(args.broker)
    with (
        tempfile.TemporaryDirectory(prefix="edgesort-bench-outbox-", dir=args.state_dir) as tmp,
        broker as url,
    ):
        results = [_measure(Path(tmp), url, fsync, args.events) for fsync in (True, False)]
    report = {
        "bench": "outbox",
        "events": args.events,
        "payload": EVENT,
        "broker": args.broker or ("private mosquitto on 127.0.0.1" if url else None),
        "note": None if url else "no broker: mosquitto is not installed and --broker was not given",
        "results": results,
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
        },
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url
