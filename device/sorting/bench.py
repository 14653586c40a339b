"""`edgesort bench sort`: the sorting line on the twin across belt speeds, item rates, MCUs and faults.

Each run reports, from the twin's truth, sort_accuracy next to classification_accuracy, wrong_bin, missed
ejections, decision latency (frame capture to the MCU's acknowledgement) p50/p99 and, from the same run's
pipeline, the inference stage's p99, so that "decision p99 <= inference p99 + 10 ms" is read off one run.
Each run's whole report (every item's truth, decision and bin) is written beside the JSON, in `<name>_runs/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from firmware_bridge.protocol import DEFAULT_BAUD

log = logging.getLogger(__name__)

FAULT_RUNS = {
    "stuck_gate": "stuck_gates=2",
    "host_stall": "faults=stall@6:0.8",
    "host_freeze": "faults=freeze@6:2.0",
    "mcu_reset": "faults=reset@8",
    # the MCU and the belt stop while the host runs on, as a starved simulator does (30-100 ms, four times)
    "mcu_pause": "faults=pause@4:0.03,pause@7:0.06,pause@10:0.1,pause@13:0.045",
    # bursts of them, as a starved simulator pauses: three 30-80 ms pauses 0.33 s apart, every 3 s (27 pauses)
    "mcu_bursts": "faults=" + ",".join(f"pause@{2 + 3 * k + 0.33 * j:.2f}:{0.03 + 0.01 * ((3 * k + j) % 6):.2f}"
                                       for k in range(9) for j in range(3)),
}


# fault-free runs feed min_items / rate seconds and this much more: the twin spaces items 0.8-1.2 nominal
# pitches apart, so exactly that long fed 193-202 of 200 (at 193, one item is 0.52 point)
FEED_MARGIN = 1.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="feeding time per run")
    p.add_argument("--min-items", type=int, default=200,
                   help="fault-free runs feed at least this many items (longer than --seconds at low rates): one "
                   "item is 100/N points of accuracy, so 0.5 point needs 200 (0: --seconds only)")
    p.add_argument("--speeds", default="0.5,1.5", help="belt speeds, m/s")
    p.add_argument("--rates", default="2,8", help="items per second")
    p.add_argument("--mcu", default="python,firmware", help="python and/or firmware (simavr)")
    p.add_argument("--bauds", default=str(DEFAULT_BAUD),
                   help="the firmware's UART rates, each a build of its own (e.g. 115200,250000: side by side); "
                   "the Python MCU has no wire time and runs once")
    p.add_argument("--faults", default="stuck_gate,host_stall,host_freeze,mcu_reset,mcu_pause,mcu_bursts",
                   help=f"fault runs at the first speed and rate ({', '.join(FAULT_RUNS)}; '' for none)")
    p.add_argument("--bundle", type=Path, help="model bundle (default: the demo bundle)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--confidence-floor", type=float,
                   help="override sorting.confidence_floor (0: every graded item goes to its top class's bin)")
    p.add_argument("--switch-interval", default="",
                   help="the interpreter's switch interval, s, or several side by side (e.g. 0.005,0.001; CPython's "
                   "5 ms when not given): how long a thread "
                   "that wants the GIL waits before the holder is asked to let go")
    p.add_argument("--state-dir", type=Path, default=Path("runs/bench-sort-state"))
    p.add_argument("--json", type=Path, required=True)


def _config(args: argparse.Namespace, speed: float, rate: float, extra: str, tag: str, baud: int = DEFAULT_BAUD):
    from device.config import DeviceConfig

    base = DeviceConfig()
    query = urlencode({"belt_speed": speed, "rate": rate, "seed": args.seed})
    uri = f"sim://bench?{query}" + (f"&{extra}" if extra else "")
    return base.model_copy(update={
        "device": base.device.model_copy(update={"id": "bench"}),
        "cameras": [base.cameras[0].model_copy(update={"uri": uri, "name": "sim"})],
        "model": base.model if args.bundle is None else base.model.model_copy(update={"bundle": args.bundle}),
        "line": base.line.model_copy(update={"max_belt_speed_mps": speed}),
        "bridge": base.bridge.model_copy(update={"port": "sim", "baud": baud}),
        "sorting": base.sorting if args.confidence_floor is None
        else base.sorting.model_copy(update={"confidence_floor": args.confidence_floor}),
        "paths": base.paths.model_copy(update={"state_dir": args.state_dir / tag}),
    })


def _row(report: dict[str, Any], **key: Any) -> dict[str, Any]:
    infer = report.get("pipeline", {}).get("latency_ms", {}).get("infer", {})
    infer_p99 = float(infer.get("p99", 0.0)) if isinstance(infer, dict) else 0.0
    dec = report["decision_latency_ms"]
    return {
        **key,
        "items_total": report["items_total"],
        "items_per_s": report["items_per_s"],
        "sort_accuracy": report["sort_accuracy"],
        "classification_accuracy": report["classification_accuracy"],
        "decision_accuracy": report["decision_accuracy"],
        "items_decided_twice": report["items_decided_twice"],
        "accuracy_gap_points": round(100 * (report["classification_accuracy"] - report["sort_accuracy"]), 2),
        # the gap in two: the policy's share (the confidence floor, touching items never graded) and the line's
        # (items that missed the bin their decision named: tracking, timing, ejection)
        "decided_bin_accuracy": report["decided_bin_accuracy"],
        "policy_gap_points": round(100 * (report["classification_accuracy"] - report["decided_bin_accuracy"]), 2),
        "line_gap_points": round(100 * (report["decided_bin_accuracy"] - report["sort_accuracy"]), 2),
        "wrong_bin": report["wrong_bin"],
        "own_bin_unpaired": report["own_bin_unpaired"],
        "misgraded_bin": report["misgraded_bin"],
        "default_bin": report["default_bin"],
        "missed_ejections": report["missed_ejections"],
        "decision_latency_ms": dec,
        "decision_latency_parts_ms": report["decision_latency_parts_ms"],
        "inference_p99_ms": round(infer_p99, 2),
        "decision_p99_minus_inference_p99_ms": round(dec["p99"] - infer_p99, 2),
        "fire_position_error_counts": report["fire_position_error_counts"],
        # the twin's view of each stroke: its item's distance from the gate's centre mid-stroke, and strokes that
        # took anything but their own item (a same-grade neighbour too, which no bin count shows)
        "aim_error_mm": report.get("aim", {}).get("error_mm", {}),
        "strokes_took_other": report.get("aim", {}).get("strokes_took_other", 0),
        "fps": report["fps"],
        # the MCU's clock jumped against the host's: a simulator that fell behind real time (a starved VM); the
        # count-to-time mapping restarts each time, and positions measured across a jump are off
        "clock_jumps": report.get("link", {}).get("clock_jumps", 0),
        # what the sorter did about them: ejections decided from such positions cancelled, and queued again once
        # the item was seen where it is (device/sorting/clock_guard.py)
        "ejections_withdrawn": report.get("ejections", {}).get("withdrawn", 0),
        "ejections_requeued": report.get("ejections", {}).get("requeued", 0),
        # held back on positions from a jump's window (a neighbour in the sweep, a slip) and queued after all
        "ejections_released": report.get("ejections", {}).get("released", 0),
        # ejections withdrawn in a burst of jumps the link could not all locate (the line stood down)
        "ejections_stood_down": report.get("ejections", {}).get("stood_down", 0),
        # frames placed by their items, not their encoder count: a clock jump the link had not yet seen
        "frames_shifted": report.get("tracking", {}).get("frames_shifted", 0),
    }


def summarise(rows: list[dict[str, Any]], graded: list[dict[str, Any]]) -> dict[str, Any]:
    """The fault-free runs pooled (a 0.5-point gap needs hundreds of items; a run at 2 items/s has 40 a
    20 s run), and what other confidence floors would have done with every run's graded items (`graded`:
    the reports' per-item entries that have a top class)."""
    clean = [r for r in rows if r.get("fault") is None and "error" not in r]
    items = sum(r["items_total"] for r in clean)
    pooled: dict[str, Any] = {"runs": len(clean), "items": items}
    if items:
        for k in ("sort_accuracy", "classification_accuracy", "decided_bin_accuracy"):
            pooled[k] = round(sum(r[k] * r["items_total"] for r in clean) / items, 4)
        pooled["accuracy_gap_points"] = round(100 * (pooled["classification_accuracy"] - pooled["sort_accuracy"]), 2)
        pooled["line_gap_points"] = round(100 * (pooled["decided_bin_accuracy"] - pooled["sort_accuracy"]), 2)
    return {"fault_free_pooled": pooled, "floor_sweep": floor_sweep(graded)}


def floor_sweep(graded: list[dict[str, Any]],
                floors: tuple[float, ...] = (0.0, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)) -> list[dict[str, Any]]:
    """For each floor: the graded items it would send to the default bin with a correct top class (the floor's
    cost in sort accuracy) and with a wrong one (misgrades it keeps out of a grade bin), and the misgrades that
    would still reach one. Read from each item's aggregated confidence, which does not depend on the floor."""
    n = len(graded)
    out = []
    for f in floors:
        below = [it for it in graded if it["confidence"] < f]
        lost = sum(it["top"] == it["true"] for it in below)
        passed = sum(it["top"] != it["true"] for it in graded if it["confidence"] >= f)
        out.append({"floor": f, "graded": n, "correct_to_default": lost, "misgraded_caught": len(below) - lost,
                    "misgraded_to_grade_bin": passed,
                    "cost_points": round(100 * lost / n, 2) if n else 0.0})
    return out


def latency_histogram(path: Path, report: dict[str, Any], row: dict[str, Any], tag: str) -> bool:
    """Each ejected item's decision latency (capture to the MCU's acknowledgement) against the target line,
    inference p99 + 10 ms, as a PNG; False when matplotlib is missing or nothing was ejected."""
    from device.plots import latency_axes, save_latency_png

    lat = [it["latency_ms"] for it in report["per_item"] if it.get("acked")]
    axes = latency_axes((8, 4)) if lat else None
    if axes is None:
        return False
    fig, ax = axes
    target = row["inference_p99_ms"] + 10.0
    ax.hist(lat, bins=60, color="tab:blue", alpha=0.8,
            label=f"{len(lat)} ejected items: p50 {row['decision_latency_ms']['p50']:.1f}, "
                  f"p99 {row['decision_latency_ms']['p99']:.1f} ms")
    ax.axvline(target, color="tab:red", linestyle="--", label=f"inference p99 + 10 ms = {target:.1f} ms")
    save_latency_png(fig, ax, path, "frame capture to the MCU's acknowledgement (ms)", "items",
                     f"{tag}: decision latency ({row.get('cpu_steal_percent', '?')}% steal)")
    return True


def run(args: argparse.Namespace) -> int:
    from device.commands.probes import CpuShares
    from device.sorting.session import run_twin_session

    speeds = [float(x) for x in args.speeds.split(",") if x]
    rates = [float(x) for x in args.rates.split(",") if x]
    mcus = [m for m in args.mcu.split(",") if m]
    faults = [f for f in args.faults.split(",") if f]
    for f in faults:
        if f not in FAULT_RUNS:
            raise SystemExit(f"bench sort: unknown fault run '{f}' (known: {', '.join(FAULT_RUNS)})")
    switches = [float(x) for x in args.switch_interval.split(",") if x] or [sys.getswitchinterval()]
    rows = []
    graded: list[dict[str, Any]] = []  # every run's graded items, for the floor sweep
    runs_dir = args.json.with_name(args.json.stem + "_runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    bauds = [int(x) for x in args.bauds.split(",") if x] or [DEFAULT_BAUD]
    base = [(m, s, r, "") for m in mcus for s in speeds for r in rates]
    base += [(m, speeds[0], rates[0], f) for m in mcus for f in faults]
    # the variants compared (UART rates, switch intervals) run one after the other for each line setting, so
    # that a spell of steal falls on both sides of a comparison rather than on one
    plan = [(m, b, sw, s, r, f) for m, s, r, f in base
            for b in (bauds if m == "firmware" else bauds[:1]) for sw in switches]
    for mcu, baud, switch, speed, rate, fault in plan:
        tag = f"{mcu}-{speed}-{rate}-{fault or 'none'}" + (f"-{baud}" if mcu == "firmware" and len(bauds) > 1 else "")
        tag += f"-sw{switch * 1000:g}ms" if len(switches) > 1 else ""
        log.info("bench sort: %s", tag)
        sys.setswitchinterval(switch)
        cfg = _config(args, speed, rate, FAULT_RUNS.get(fault, ""), tag, baud)
        cpu = CpuShares()
        key = {"mcu": mcu, "baud": baud if mcu == "firmware" else None, "switch_interval_s": switch,
               "belt_speed_mps": speed, "rate": rate, "fault": fault or None}
        seconds = args.seconds if fault else max(args.seconds, args.min_items / rate * FEED_MARGIN)
        key["seconds"] = round(seconds, 1)
        try:
            report = run_twin_session(cfg, seconds, firmware=(mcu == "firmware"))
        except Exception as exc:  # one run that cannot start (an MCU that never answers) must not lose the rest
            log.exception("bench sort: %s failed", tag)
            row = {**key, "error": f"{type(exc).__name__}: {exc}", "cpu_steal_percent": cpu.percent().get("steal")}
        else:
            row = _row(report, **key, cpu_steal_percent=cpu.percent().get("steal"))
            # the whole report (every item's truth, decision and bin), so a wrong bin can be traced after the run
            detail = runs_dir / f"{tag}.json"
            detail.write_text(json.dumps(report, indent=1, default=str) + "\n")
            row["report"] = str(detail)
            graded += [it for it in report["per_item"] if it.get("top") is not None]
            if latency_histogram(detail.with_suffix(".png"), report, row, tag):
                row["latency_png"] = str(detail.with_suffix(".png"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"bench": "sort", "seconds_per_run": args.seconds, "min_items": args.min_items,
           "confidence_floor": args.confidence_floor, "switch_intervals_s": switches,
           "machine": platform.platform(),
           "processor": platform.processor(), "summary": summarise(rows, graded), "runs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    failed = [r for r in rows if "error" in r]
    if failed:
        log.error("bench sort: %d of %d runs failed (their rows carry the error)", len(failed), len(rows))
    return 1 if failed else 0
