"""`edgesort demo`: the sorter on the built-in digital twin, no hardware needed.

The daemon's own core (device.sorting.line) runs against a simulated conveyor and MCU; at the end the twin,
which knows every item's true grade, reports how well the line sorted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the sorter on the built-in digital twin (no hardware)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=40.0, help="how long items are fed onto the belt")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--mqtt", help="mqtt://HOST:PORT: publish events and telemetry to this broker")
    p.add_argument("--belt-speed", type=float, default=0.5, help="belt speed in m/s")
    p.add_argument("--rate", type=float, default=2.0, help="items per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=1, choices=(1, 2, 3), help="cameras per item")
    p.add_argument("--sim", default="", help="extra sim:// parameters, e.g. 'slip=0.2&noise=6&stuck_gates=3'")
    p.add_argument("--firmware", action="store_true", help="use the real firmware in simavr as the MCU")
    p.add_argument("--config", type=Path, help="a device config to start from (camera and bridge are replaced)")
    p.add_argument("--bundle", type=Path, help="model bundle (default: the built-in demo bundle)")
    p.add_argument("--state-dir", type=Path, default=Path.home() / ".local/state/edgesort/demo",
                   help="where the event outbox lives")
    p.add_argument("--no-live", action="store_true", help="no live table (for logs and CI)")
    p.set_defaults(func=run_demo)


def demo_config(args: argparse.Namespace):
    from device.config import DeviceConfig, load_config

    base = load_config(args.config) if args.config else DeviceConfig()
    q = {"belt_speed": args.belt_speed, "rate": args.rate, "seed": args.seed, "views": args.views}
    uri = "sim://demo?" + urlencode(q) + (f"&{args.sim}" if args.sim else "")
    cam = base.cameras[0].model_copy(update={"uri": uri, "name": "sim"})
    model = base.model if args.bundle is None else base.model.model_copy(update={"bundle": args.bundle})
    return base.model_copy(update={
        "device": base.device.model_copy(update={"id": base.device.id if args.config else "demo"}),
        "cameras": [cam],
        "model": model,
        "line": base.line.model_copy(update={"max_belt_speed_mps": max_speed(uri)}),
        "bridge": base.bridge.model_copy(update={"port": "sim"}),
        "mqtt": base.mqtt.model_copy(update={"url": args.mqtt}),
        "paths": base.paths.model_copy(update={"state_dir": args.state_dir}),
    })


def max_speed(uri: str) -> float:
    """The fastest the twin's belt will run (its speed and every step of its speed profile)."""
    from device.sim.twin import TwinParams

    p = TwinParams.from_uri(uri)
    steps = [float(part.split(":")[1]) for part in p.speed_profile.split(",") if part]
    return max([p.belt_speed_mps, *steps])


def _status_table(line, elapsed: float, seconds: float):
    from rich.table import Table

    t = Table(title=f"edgesort demo — {elapsed:5.1f} / {seconds:.0f} s", show_header=False)
    snap = line.telemetry()
    twin = line.twin
    bins: dict[str, int] = {}
    for it in twin.finished:
        bins[it.bin or "?"] = bins.get(it.bin or "?", 0) + 1
    pipe = snap.get("pipeline", {})
    t.add_row("items decided", str(snap.get("items", 0)))
    t.add_row("on the belt / in bins", f"{twin.on_belt()} / {len(twin.finished)}")
    t.add_row("fps in / out", f"{pipe.get('fps_in', 0):.1f} / {pipe.get('fps_out', 0):.1f}")
    lat = snap.get("latency_ms", {}).get("decision", {})
    t.add_row("decision latency p50 / p99", f"{lat.get('p50_ms', 0)} / {lat.get('p99_ms', 0)} ms")
    t.add_row("grades", " ".join(f"{g}:{n}" for g, n in sorted(snap.get("counts", {}).items())))
    t.add_row("bins", " ".join(f"{b}:{n}" for b, n in sorted(bins.items())))
    t.add_row("ejections", " ".join(f"{k}:{v}" for k, v in snap.get("ejections", {}).items()))
    return t


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from device.sorting.session import run_twin_session

    console = Console(stderr=True)
    cfg = demo_config(args)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    with Live(console=console, refresh_per_second=2, auto_refresh=False, redirect_stderr=False) as live:

        def show(line, elapsed: float) -> None:
            if not args.no_live:
                live.update(_status_table(line, elapsed, args.seconds), refresh=True)

        report = run_twin_session(cfg, args.seconds, firmware=args.firmware, on_tick=show)
    report["mqtt"] = args.mqtt
    keys = ("items_total", "items_correct", "sort_accuracy", "classification_accuracy", "decision_accuracy",
            "missed_ejections",
            "wrong_bin", "misgraded_bin", "default_bin", "decision_latency_ms", "fps")
    summary = {k: report[k] for k in keys}
    console.print_json(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {args.json}")
    return 0
