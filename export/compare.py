"""Bundles of one model at several precisions, side by side in one run: top-1, size, ONNX Runtime latency.

    edgesort export compare FP32_BUNDLE FP16_BUNDLE INT8_BUNDLE --data SPEC --json FILE [--iters N]

Accuracy comes from export.evaluate (the device's preprocessing and backend). Latency is timed interleaved,
one batch-1 inference of each bundle in turn on the same real image, so a busy machine slows them alike and
the ratios stay fair; each session gets the same thread count.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def compare_bundles(
    bundles: list[Path],
    spec: str,
    *,
    split: str = "val",
    iters: int = 200,
    warmup: int = 10,
    threads: int = 1,
    limit: int = 0,
) -> dict[str, Any]:
    import onnxruntime

    from device.backends import create_backend
    from device.bundle import verify_bundle
    from device.preprocess import Preprocessor
    from export.evaluate import evaluate_bundle
    from export.samples import iter_raw_images

    opened = [verify_bundle(b) for b in bundles]
    rows: list[dict[str, Any]] = []
    for path, b in zip(bundles, opened, strict=True):
        ev = evaluate_bundle(path, spec, split=split, backend="onnxruntime", threads=threads, limit=limit)
        rows.append(
            {
                "bundle": str(path),
                "model_id": b.manifest.model_id(),
                "precision": b.manifest.precision,
                "model_bytes": b.manifest.files["model.onnx"].size,
                "top1": ev["top1"],
                "top5": ev["top5"],
                "images": ev["count"],
                "gate": b.manifest.parity.get("accuracy_gate", {}).get("summary", ""),
            }
        )
    image, _ = next(iter_raw_images(spec, split, 1))
    runners = [create_backend(b, "onnxruntime", threads=threads, precision="fp32", warmup=warmup) for b in opened]
    inputs = [np.array(Preprocessor(b.manifest.input, max_batch=1)([image])) for b in opened]
    times: list[list[float]] = [[] for _ in opened]
    try:
        for _ in range(iters):
            for i, (r, x) in enumerate(zip(runners, inputs, strict=True)):
                t0 = time.perf_counter()
                r.infer(x)
                times[i].append(1000.0 * (time.perf_counter() - t0))
    finally:
        for r in runners:
            r.close()
    base = statistics.median(times[0])
    for row, ts in zip(rows, times, strict=True):
        row.update(
            {
                "latency_ms_median": statistics.median(ts),
                "latency_ms_p99": _percentile(ts, 99),
                "speedup_vs_first": base / statistics.median(ts),
            }
        )
    return {
        "data": spec,
        "split": split,
        "batch": 1,
        "threads": threads,
        "iters": iters,
        "onnxruntime": onnxruntime.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "bundles": rows,
    }


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| bundle | precision | top-1 | top-5 | model.onnx | latency median (ms) | p99 (ms) | vs first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["bundles"]:
        lines.append(
            f"| {r['model_id']} | {r['precision']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | "
            f"{r['model_bytes'] / 1e6:.2f} MB | {r['latency_ms_median']:.2f} | {r['latency_ms_p99']:.2f} | "
            f"{r['speedup_vs_first']:.2f}x |"
        )
    return "\n".join(lines)
