"""`edgesort fleet watch`: a live table of the devices that report to a broker.

FleetView is pure state (fed with topic + payload, rendered to a rich Table), so it is tested without a
terminal; watch() connects, feeds it from paho's thread and redraws with rich.live.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from device.fleet import topics

STALE_S = 30.0  # no message for this long: the row is shown as stale (the status may be out of date)
REFRESH_HZ = 2  # table redraws per second
PIPED_WIDTH = 200  # columns when stdout is not a terminal


@dataclass
class DeviceRow:
    site: str
    device: str
    state: str = "?"
    session: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    fps: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    reject_rate: float | None = None
    paused: bool | None = None
    pending: int | None = None
    alarms: int = 0
    last_alarm: str = ""
    last_seen: float = 0.0


class FleetView:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], DeviceRow] = {}
        self.ignored = 0  # messages that were not JSON or not ours
        self._lock = threading.Lock()

    def update(self, topic: str, payload: bytes, now: float | None = None) -> None:
        parsed = topics.parse(topic)
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if parsed is None or not isinstance(doc, dict):
            self.ignored += 1
            return
        with self._lock:
            row = self.rows.setdefault((parsed.site, parsed.device), DeviceRow(parsed.site, parsed.device))
            row.last_seen = time.time() if now is None else now
            if parsed.kind == "status":
                row.state = str(doc.get("state", "?"))
                row.session = doc.get("session")
                row.versions = doc.get("versions") or {}
            elif parsed.kind == "telemetry":
                row.fps = doc.get("fps")
                row.counts = doc.get("counts") or {}
                row.reject_rate = doc.get("reject_rate")
                row.paused = doc.get("paused")
                row.pending = (doc.get("outbox") or {}).get("pending")
                if row.state in ("?", "offline", "stopped"):
                    row.state = "online"  # telemetry flows: the retained status is older than this message
            elif parsed.kind == "events/alarm":
                row.alarms += 1
                row.last_alarm = f"{doc.get('kind', '?')}: {doc.get('message', '')}"[:60]
            else:
                self.ignored += 1

    def table(self, now: float | None = None) -> Table:
        t = time.time() if now is None else now
        table = Table(title="edgesort fleet", expand=False)
        for col in ("device", "status", "fps", "counts per grade", "reject", "outbox", "alarms", "last seen"):
            table.add_column(
                col, justify="right" if col in ("fps", "reject", "outbox", "last seen") else "left"
            )
        with self._lock:
            rows = sorted(self.rows.values(), key=lambda r: (r.site, r.device))
            for r in rows:
                age = t - r.last_seen
                state = r.state + (" (paused)" if r.paused else "")
                style = {"online": "green", "stopped": "yellow", "offline": "red"}.get(r.state, "")
                if age > STALE_S and r.state == "online":
                    state, style = "stale", "magenta"
                table.add_row(
                    f"{r.site}/{r.device}",
                    f"[{style}]{state}[/]" if style else state,
                    "" if r.fps is None else f"{r.fps:.1f}",
                    " ".join(f"{g}:{n}" for g, n in r.counts.items()),
                    "" if r.reject_rate is None else f"{100 * r.reject_rate:.1f}%",
                    "" if r.pending is None else str(r.pending),
                    f"{r.alarms} {r.last_alarm}".strip() if r.alarms else "0",
                    f"{age:.0f} s ago",
                )
        return table


def watch(
    client: Any, *, site: str = "+", duration: float | None = None, live: bool = True, console: Any = None
) -> FleetView:
    """Subscribe a connected paho client to the fleet topics and show the table until duration or Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    view = FleetView()
    client.on_message = lambda _c, _u, msg: view.update(msg.topic, bytes(msg.payload))
    client.subscribe([(f, 1) for f in topics.fleet_filters(site)])
    if console is None:  # piped (logs, CI): wide enough that no column is cut
        console = Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        if live:
            with Live(view.table(), console=console, refresh_per_second=REFRESH_HZ) as screen:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(1 / REFRESH_HZ)  # redraw pace
                    screen.update(view.table())
        else:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.1)  # collecting messages on paho's thread
            console.print(view.table())
    except KeyboardInterrupt:
        pass
    return view
