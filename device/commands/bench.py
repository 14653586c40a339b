"""`edgesort bench model|pipeline|bridge|outbox|sort`: every performance figure comes from here, as JSON.

- `bench model BUNDLE`: each backend present on this machine, batch 1 and larger, after warm-up; median and
  p99 latency and throughput. `--eager CHECKPOINT` adds PyTorch eager on the same model (torch and training/
  imported lazily, only then) and the ratio to ONNX Runtime at batch 1. Backends are timed interleaved, one
  call each in turn, so a busy machine slows them alike and the ratios stay fair.
- `bench pipeline BUNDLE --source URI`: the same frames through the bare backend (inference only, batches
  prepared beforehand) and through the full pipeline (capture, prepare, infer, finish, consumer threads);
  efficiency = pipeline_fps / bare_fps. The bare runs go before and after the pipeline run and are averaged.
  The process's resident memory is sampled throughout (peak, growth, slope). A latency histogram PNG is
  written next to the JSON.
- `bench bridge|outbox|sort`: dispatched to firmware_bridge.bench, device.fleet.bench and
  device.sorting.bench (each has `add_arguments(parser)` and `run(args)`), imported only when asked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DELEGATES = {
    "bridge": ("firmware_bridge.bench", "host <-> MCU round trip and firing accuracy"),
    "outbox": ("device.fleet.bench", "MQTT outbox throughput and replay"),
    "sort": ("device.sorting.bench", "frame capture to MCU acknowledgement on the twin"),
}
# The replay source runs this much faster than the first bare run: never the bottleneck, like a camera faster
# than the model, yet not so fast that its thread takes CPU from inference for frames that are then dropped.
REPLAY_FACTOR = 1.5
MAX_REPLAY_FPS = 6000.0  # the replay pacer keeps this rate (measured: 5000 fps asked, 4999.9 delivered)
RSS_PERIOD_S = 1.0  # resident memory sample period: enough to see growth, no cost to the run


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmarks that write JSON: model, pipeline, bridge, outbox, sort")
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True, parser_class=_LazyParser)

    m = sub.add_parser("model", help="every backend present, batch 1 and larger: median and p99 latency")
    m.add_argument("bundle", type=Path)
    m.add_argument("--backends", default="all", help="comma-separated backend names, or 'all' present")
    m.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    m.add_argument("--warmup", type=int, default=10, help="untimed runs per backend and batch")
    m.add_argument("--iters", type=int, default=200, help="timed runs per backend and batch")
    m.add_argument("--threads", type=int, default=0, help="CPU threads for every backend (0 = default)")
    m.add_argument("--precision", default="fp32")
    m.add_argument("--eager", type=Path, default=None, help="training checkpoint: add PyTorch eager")
    m.add_argument("--json", type=Path, default=None, help="write the results here (default: stdout only)")
    m.set_defaults(func=bench_model)

    q = sub.add_parser("pipeline", help="bare backend vs the full pipeline on the same frames; memory")
    q.add_argument("bundle", type=Path)
    q.add_argument("--source", required=True, help="camera URI to take the frames from (file, folder, sim://)")
    q.add_argument("--json", type=Path, required=True, help="results; the histogram PNG goes next to it")
    q.add_argument("--backend", default="auto")
    q.add_argument("--threads", type=int, default=0)
    q.add_argument("--frames", type=int, default=64, help="frames taken from the source and replayed")
    q.add_argument("--seconds", type=float, default=20.0, help="pipeline time in all (600 for a soak)")
    q.add_argument("--rounds", type=int, default=4, help="pipeline segments, each between two bare runs")
    q.add_argument("--bare-seconds", type=float, default=2.5, help="length of each bare run")
    q.add_argument(
        "--source-fps",
        type=float,
        default=0.0,
        help="replay rate; 0 = 1.5 x the bare rate (a camera faster than the model)",
    )
    q.add_argument("--queue-size", type=int, default=2)
    q.add_argument("--switch-interval", type=float, default=None,
                   help="Python's GIL switch interval in the pipeline, s (default: leave CPython's 0.005)")
    q.add_argument(
        "--task",
        choices=("whole", "sorter"),
        default="whole",
        help="whole: the bundle on whole frames; sorter: the sorter's item crops (classify)",
    )
    q.add_argument("--batch", type=int, default=8, help="largest batch of item crops (--task sorter)")
    q.set_defaults(func=bench_pipeline)

    for name, (module, what) in DELEGATES.items():
        sub.add_parser(name, help=f"{what} ({module})", lazy_module=module)


# delegation ---------------------------------------------------------------------------------------------
class _LazyParser(argparse.ArgumentParser):
    """A subparser whose arguments come from another package's bench module, imported only when this
    subcommand is the one being parsed (so `edgesort --help` imports nothing of it)."""

    def __init__(self, *args: Any, lazy_module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy_module = lazy_module

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._lazy_module is not None:
            module, self._lazy_module = self._lazy_module, None
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                self.error(f"this benchmark needs {module}, which this install lacks ({exc})")
            mod.add_arguments(self)
            self.set_defaults(func=lambda a: int(mod.run(a) or 0))
        return super().parse_known_args(args, namespace)


# shared helpers -----------------------------------------------------------------------------------------
def _percentiles(ms: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(ms)
    return {
        "median_ms": round(float(np.median(a)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
        "n": int(a.size),
    }


def _machine() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        loads = os.getloadavg()
        info["loadavg_1m"] = round(loads[0], 2)
    except OSError:
        pass
    for mod in ("numpy", "onnxruntime", "cv2", "torch", "tensorrt"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            info[mod] = m.__version__
    return info


def _write_json(path: Path | None, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2, sort_keys=False)
    if path is None:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"wrote {path}")


def _timed_interleaved(runners: dict[str, Callable[[], object]], warmup: int, iters: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for run in runners.values():
            run()
    out: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(iters):
        for k, run in runners.items():
            t = time.perf_counter()
            run()
            out[k].append((time.perf_counter() - t) * 1e3)
    return out


# bench model --------------------------------------------------------------------------------------------
def _eager_runner(checkpoint: Path, threads: int) -> tuple[Callable[[Any], object], dict[str, Any]]:
    """PyTorch eager from a training checkpoint: imported here only, so device/ never needs torch."""
    from device.errors import require

    torch = require("torch", "bench model --eager")
    ckpt_mod = require("training.checkpoint", "bench model --eager", "run it from a workstation install")
    if threads:
        torch.set_num_threads(threads)
    model, meta = ckpt_mod.load_checkpoint(checkpoint)
    model.eval()

    def run(batch: Any) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(batch))

    return run, {"arch": meta.get("arch"), "torch_threads": torch.get_num_threads()}


def bench_model(args: argparse.Namespace) -> int:
    import numpy as np

    from device.backends import available_backends, create_backend
    from device.bundle import verify_bundle
    from device.errors import EdgesortError
    from device.sorting.line import resolve_bundle_path

    bundle = verify_bundle(resolve_bundle_path(args.bundle))
    spec = bundle.manifest.input
    present = available_backends()
    wanted = list(present) if args.backends == "all" else [b.strip() for b in args.backends.split(",")]
    backends: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        why = present.get(name, "not a known backend")
        if why is not None:
            skipped[name] = why
            continue
        try:
            backends[name] = create_backend(bundle, name, threads=args.threads, precision=args.precision)
        except EdgesortError as exc:
            skipped[name] = str(exc)
    runners: dict[str, Callable[[Any], object]] = {k: b.infer for k, b in backends.items()}
    eager_info = None
    if args.eager is not None:
        runners["torch-eager"], eager_info = _eager_runner(args.eager, args.threads)
    if not runners:
        raise EdgesortError("no backend could run the bundle: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    for bs in args.batch:
        x = rng.normal(size=(bs, spec.channels, spec.height, spec.width)).astype(np.float32)
        calls: dict[str, Callable[[], object]] = {k: partial(r, x) for k, r in runners.items()}
        timings = _timed_interleaved(calls, args.warmup, args.iters)
        for name, ms in timings.items():
            p = _percentiles(ms)
            row = {"backend": name, "batch": bs, **p, "items_per_s": round(bs * 1e3 / p["median_ms"], 1)}
            fixed = getattr(backends.get(name), "max_batch", None)
            if fixed is not None and bs > fixed:
                row["note"] = f"the model's batch is fixed at {fixed}: run in {(bs + fixed - 1) // fixed} calls"
            results.append(row)
            print(
                f"{name:12s} batch {bs:3d}: {p['median_ms']:8.3f} ms median, {p['p99_ms']:8.3f} ms p99, "
                f"{row['items_per_s']:9.1f} items/s"
            )
    doc: dict[str, Any] = {
        "bench": "model",
        "bundle": str(args.bundle),
        "model_id": bundle.manifest.model_id(),
        "input": list(spec.shape),
        "threads": args.threads,
        "warmup": args.warmup,
        "iters": args.iters,
        "results": results,
        "skipped": skipped,
        "machine": _machine(),
    }
    if eager_info:
        doc["eager"] = eager_info
    for name in backends:
        doc.setdefault("providers", {})[name] = getattr(backends[name], "providers", None)
    by = {(r["backend"], r["batch"]): r for r in results}
    if ("onnxruntime", 1) in by and ("torch-eager", 1) in by:
        ratio = by[("torch-eager", 1)]["median_ms"] / by[("onnxruntime", 1)]["median_ms"]
        doc["onnxruntime_vs_torch_eager_batch1"] = round(ratio, 3)
        print(f"onnxruntime is {ratio:.2f}x PyTorch eager at batch 1 (median latency ratio)")
    for b in backends.values():
        b.close()
    _write_json(args.json, doc)
    return 0


# bench pipeline -----------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Samples resident memory every RSS_PERIOD_S in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> RssSampler:
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._t0, rss_mb()))
            self._stop.wait(RSS_PERIOD_S)

    def mark(self) -> None:
        """The steady state starts now (model loaded, queues full): growth is measured from here."""
        self._mark = time.monotonic() - self._t0

    def stop(self) -> dict[str, Any]:
        import numpy as np

        self._stop.set()
        self._t.join(timeout=2 * RSS_PERIOD_S)
        s = np.array(self.samples) if self.samples else np.zeros((1, 2))
        steady = s[s[:, 0] >= getattr(self, "_mark", 0.0)]
        if len(steady) < 2:
            steady = s
        t, mb = steady[:, 0], steady[:, 1]
        # Growth: the last 10% of the steady run against its first 10%, so one spike does not count.
        k = max(1, len(mb) // 10)
        slope = float(np.polyfit(t, mb, 1)[0] * 60.0) if len(mb) > 2 else 0.0
        return {
            "process_start_mb": round(float(s[0, 1]), 1),
            "steady_start_mb": round(float(mb[0]), 1),
            "peak_mb": round(float(s[:, 1].max()), 1),
            "end_mb": round(float(mb[-1]), 1),
            "growth_mb": round(float(np.median(mb[-k:]) - np.median(mb[:k])), 2),
            "slope_mb_per_min": round(slope, 3),
            "steady_seconds": round(float(t[-1] - t[0]), 1),
            "samples": len(s),
            "period_s": RSS_PERIOD_S,
            "series_t_s_mb": [[round(float(a), 1), round(float(b), 1)] for a, b in s[::10]],
        }


def _collect_frames(uri: str, n: int) -> list[Any]:
    """Read up to n frames straight from the source (no capture thread: none may be dropped here)."""
    from device.capture import EndOfStreamError, open_source
    from device.errors import EdgesortError

    src = open_source(uri, name="bench")
    frames: list[Any] = []
    src.open()
    try:
        deadline = time.monotonic() + max(30.0, n / 5)
        while len(frames) < n and time.monotonic() < deadline:
            f = src.read(0.5)
            if f is not None:
                frames.append(f.image.copy())
    except EndOfStreamError:
        pass
    finally:
        src.close()
        twin = getattr(src, "twin", None)
        if twin is not None:
            twin.stop()  # the twin's world thread would keep running and compete with the timed runs
    if not frames:
        raise EdgesortError(f"{uri}: the source gave no frame")
    return frames


def _bare_run(backend: Any, batches: list[Any], seconds: float) -> tuple[float, list[float]]:
    """Frames per second of inference alone, cycling through the prepared batches."""
    lat = []
    n = 0
    t0 = time.perf_counter()
    while True:
        b = batches[n % len(batches)]
        n += 1
        if b is None:
            continue
        t = time.perf_counter()
        backend.infer(b)
        lat.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - t0 >= seconds and n >= len(batches):
            break
    return n / (time.perf_counter() - t0), lat


def bench_pipeline(args: argparse.Namespace) -> int:
    import numpy as np

    from device.backends import create_backend
    from device.bundle import verify_bundle
    from device.capture.files import ReplaySource
    from device.commands.probes import CpuShares, context_switches, thread_handoff_us
    from device.errors import EdgesortError
    from device.pipeline import Pipeline
    from device.sorting.line import resolve_bundle_path

    sampler = RssSampler().start()
    cpu = CpuShares()
    bundle = verify_bundle(resolve_bundle_path(args.bundle))
    backend = create_backend(bundle, args.backend, threads=args.threads)
    images = _collect_frames(args.source, args.frames)
    h, w = images[0].shape[:2]
    print(f"{len(images)} frames {w}x{h} from {args.source}; {bundle.manifest.model_id()} on {backend.name}")

    # The same frames, prepared beforehand, for the bare backend.
    task = _task(args, bundle)
    # A frame with nothing to infer (no item in view) costs the bare backend nothing: None stays None.
    batches = [_copy(task.prepare(_as_frame(img))[0]) for img in images]
    if all(b is None for b in batches):
        raise EdgesortError(f"{args.source}: none of the {len(images)} frames gives the model anything to do")
    for b in [b for b in batches if b is not None][:3]:
        backend.infer(b)  # warm-up beyond the constructor's: first runs on real data shapes
    # Rounds of bare, pipeline, bare, ...: on a shared machine the load changes by the minute, so each
    # pipeline segment is compared with the bare runs just before and after it (side by side).
    rounds = max(1, args.rounds)
    seg = args.seconds / rounds
    bare_fps_runs: list[float] = []
    bare_lat: list[float] = []
    if args.switch_interval is not None:
        # How long a thread that wants the GIL waits before it asks the holder to let go (CPython's 5 ms). The
        # infer stage gives the GIL up during every backend run and needs it back when the run ends; a shorter
        # interval was tried for the sub-millisecond demo model and gave no gain (docs/benchmarks/device.md).
        sys.setswitchinterval(args.switch_interval)
    handoff = [thread_handoff_us()]  # what one wake-up costs here, before and after the rounds
    fps, lat = _bare_run(backend, batches, args.bare_seconds)
    bare_fps_runs.append(fps)
    bare_lat += lat
    switches_per_frame: list[float] = []
    src_fps = args.source_fps or min(REPLAY_FACTOR * fps, MAX_REPLAY_FPS)
    seg_fps: list[float] = []
    frames_total, time_total = 0, 0.0
    agg: dict[str, Any] = {"frames_in": 0, "frames_out": 0, "dropped": 0, "errors": 0}
    total_lat: list[Any] = []
    infer_lat: list[Any] = []
    stage_lat: dict[str, Any] = {}

    def consumer(frame: Any, result: Any, times: Any) -> None:
        pass

    for r in range(rounds):
        pipe = Pipeline(ReplaySource(images, fps=src_fps), backend, task, consumer, queue_size=args.queue_size)
        with pipe:
            time.sleep(min(1.0, seg / 5))  # the first frames fill the queues; steady state comes after
            f0, t0, cs0 = pipe.stats()["frames_out"], time.monotonic(), context_switches()
            if r == 0:
                sampler.mark()
            time.sleep(seg)
            st = pipe.stats()
            f1, t1, cs1 = st["frames_out"], time.monotonic(), context_switches()
            switches_per_frame.append((cs1 - cs0) / max(1, f1 - f0))
            total_lat.append(pipe.latencies_ms("total"))
            infer_lat.append(pipe.latencies_ms("infer"))
        stage_lat = st["latency_ms"]
        for k in ("frames_in", "frames_out", "dropped"):
            agg[k] += st[k]
        agg["errors"] += sum(st["errors"].values())
        seg_fps.append((f1 - f0) / (t1 - t0))
        frames_total += f1 - f0
        time_total += t1 - t0
        fps, lat = _bare_run(backend, batches, args.bare_seconds)
        bare_fps_runs.append(fps)
        bare_lat += lat
        print(
            f"round {r + 1}/{rounds}: pipeline {seg_fps[-1]:.1f} fps between bare {bare_fps_runs[-2]:.1f} "
            f"and {bare_fps_runs[-1]:.1f} fps"
        )
    memory = sampler.stop()
    backend.close()
    handoff.append(thread_handoff_us())

    per_round = [p / ((a + b) / 2) for p, a, b in zip(seg_fps, bare_fps_runs, bare_fps_runs[1:], strict=False)]
    pipeline_fps = frames_total / time_total
    bare_fps = float(np.mean(bare_fps_runs))
    efficiency = float(np.median(per_round))
    doc = {
        "bench": "pipeline",
        "bundle": str(args.bundle),
        "model_id": bundle.manifest.model_id(),
        "backend": backend.name,
        "threads": args.threads,
        "source": args.source,
        "task": args.task,
        "frames": len(images),
        "frames_with_inference": sum(b is not None for b in batches),
        "frame_size": [w, h],
        "replay_fps": round(src_fps, 1),
        "seconds": args.seconds,
        "rounds": rounds,
        "queue_size": args.queue_size,
        "switch_interval_s": sys.getswitchinterval(),
        "bare_fps": round(bare_fps, 2),
        "pipeline_fps": round(pipeline_fps, 2),
        "efficiency": round(efficiency, 4),
        "efficiency_per_round": [round(e, 4) for e in per_round],
        "bare_fps_runs": [round(f, 2) for f in bare_fps_runs],
        "pipeline_fps_runs": [round(f, 2) for f in seg_fps],
        "bare_latency": _percentiles(bare_lat),
        "pipeline": agg,
        "stage_latency_ms_last_round": stage_lat,
        "memory": memory,
        "cpu_percent": cpu.percent(),
        # one thread waking another, before and after the rounds (device/commands/probes.py); and the context
        # switches of all the process's threads per frame out, median over the rounds
        "thread_handoff_us": handoff,
        "context_switches_per_frame": round(float(np.median(switches_per_frame)), 2),
        "machine": _machine(),
    }
    print(
        f"bare {bare_fps:.1f} fps, pipeline {pipeline_fps:.1f} fps: efficiency {efficiency:.3f} "
        f"(median of {rounds} rounds); a thread hand-off takes {handoff[0]['p50']:.0f} us (p50), "
        f"{doc['context_switches_per_frame']} context switches per frame"
    )
    print(
        f"memory: peak {memory['peak_mb']} MB, growth {memory['growth_mb']} MB "
        f"({memory['slope_mb_per_min']} MB/min) over {memory['samples']} samples"
    )
    _write_json(args.json, doc)
    png = args.json.with_suffix(".png")
    if _histogram(png, np.array(bare_lat), np.concatenate(infer_lat), np.concatenate(total_lat), doc):
        print(f"wrote {png}")
    return 0


def _task(args: argparse.Namespace, bundle: Any) -> Any:
    if args.task == "sorter":
        from device.sorting.sorter import SortingTask  # the daemon's own FrameTask: crops of located items

        return SortingTask(bundle.manifest, args.batch)
    from device.pipeline import WholeFrameTask

    return WholeFrameTask(bundle, queue_size=args.queue_size)


def _copy(batch: Any) -> Any:
    import numpy as np

    return None if batch is None else np.array(batch)


def _as_frame(img: Any) -> Any:
    from device.frames import Frame

    return Frame(img, time.monotonic(), 0, "bench")


def _histogram(path: Path, bare: Any, infer: Any, total: Any, doc: dict[str, Any]) -> bool:
    from device.plots import latency_axes, save_latency_png

    axes = latency_axes((8, 4.5))
    if axes is None:
        return False
    import numpy as np

    fig, ax = axes
    hi = float(np.percentile(np.concatenate([bare, infer, total]), 99.5))
    bins = np.linspace(0, hi, 80).tolist()
    for data, label in (
        (bare, "bare backend: infer"),
        (infer, "pipeline: infer stage"),
        (total, "pipeline: capture to consumer done"),
    ):
        ax.hist(
            np.clip(data, 0, hi),
            bins=bins,
            alpha=0.55,
            label=f"{label} (p50 {np.median(data):.1f}, p99 {np.percentile(data, 99):.1f} ms)",
        )
    save_latency_png(fig, ax, path, "latency (ms)", "frames",
                     f"{doc['model_id']} on {doc['backend']}: efficiency {doc['efficiency']:.3f}")
    return True
