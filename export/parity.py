"""Parity: the exported ONNX model run by ONNX Runtime against the PyTorch model, on the same real images.

The report goes into the manifest (`parity`), and export refuses to write a bundle whose parity fails.
Batches of several sizes are run so that the dynamic batch dimension is exercised too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.contract import INPUT_NAME
from device.errors import require
from export.errors import ParityError

if TYPE_CHECKING:
    import onnxruntime
    import torch

FP32_MAX_ABS_DIFF = 1e-4
FP32_MIN_AGREEMENT = 1.0


@dataclass(frozen=True)
class ParityReport:
    precision: str
    images: int
    source: str  # where the images came from, e.g. "grocery_store:val"
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    max_abs_diff_limit: float | None  # None: not enforced (reduced precision; the accuracy gate decides)
    min_agreement: float | None
    reference: str  # "torch 2.x fp32"
    runtime: str  # "onnxruntime 1.x CPUExecutionProvider"
    batch_sizes: tuple[int, ...]
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def reason(self) -> str:
        parts = []
        if self.max_abs_diff_limit is not None and not self.max_abs_diff <= self.max_abs_diff_limit:
            parts.append(f"max abs diff {self.max_abs_diff:.3g} > {self.max_abs_diff_limit:.3g}")
        if self.min_agreement is not None and self.top1_agreement < self.min_agreement:
            parts.append(f"top-1 agreement {self.top1_agreement:.2%} < {self.min_agreement:.2%}")
        return ", ".join(parts) or "within tolerance"


def onnx_session(path: Path, *, threads: int = 1) -> onnxruntime.InferenceSession:
    ort = require("onnxruntime", "ONNX Runtime inference", "pip install 'edgesort[device]'")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: the QDQ/FP16 graphs otherwise log a warning per node
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _batches(n: int, sizes: tuple[int, ...]) -> Iterator[slice]:
    """Slices covering range(n) with batch sizes cycling through `sizes` (dynamic batch)."""
    i, k = 0, 0
    while i < n:
        b = sizes[k % len(sizes)]
        yield slice(i, min(n, i + b))
        i += b
        k += 1


def run_onnx(
    session: onnxruntime.InferenceSession, images: np.ndarray, batch_sizes: tuple[int, ...] = (8,)
) -> np.ndarray:
    out_name = session.get_outputs()[0].name
    parts = [
        session.run([out_name], {INPUT_NAME: np.ascontiguousarray(images[s])})[0]
        for s in _batches(len(images), batch_sizes)
    ]
    return np.concatenate(parts).astype(np.float32)


def run_torch(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for s in _batches(len(images), (batch,)):
            outs.append(model(torch.from_numpy(np.ascontiguousarray(images[s]))).float().numpy())
    return np.concatenate(outs)


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, float]:
    """(max abs diff, mean abs diff, top-1 agreement) between two (N, classes) output arrays."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: PyTorch {reference.shape}, ONNX Runtime {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    return float(diff.max()), float(diff.mean()), agree


def check_parity(
    model: torch.nn.Module,
    onnx_path: Path,
    images: np.ndarray,
    *,
    source: str,
    precision: str = "fp32",
    max_abs_diff: float | None = FP32_MAX_ABS_DIFF,
    min_agreement: float | None = FP32_MIN_AGREEMENT,
    batch_sizes: tuple[int, ...] = (1, 7, 8),
    threads: int = 1,
) -> ParityReport:
    """Run both on `images` (NCHW float32, already preprocessed) and measure how far they are apart.

    Returns the report; `passed` is False when a limit is exceeded (the caller refuses the bundle).
    """
    import onnxruntime as ort
    import torch

    if images.ndim != 4 or len(images) == 0:
        raise ParityError(f"parity needs a non-empty NCHW batch of images, got shape {images.shape}")
    images = images.astype(np.float32, copy=False)
    ref = run_torch(model, images)
    got = run_onnx(onnx_session(onnx_path, threads=threads), images, batch_sizes)
    mx, mean, agree = compare(ref, got)
    passed = (max_abs_diff is None or mx <= max_abs_diff) and (min_agreement is None or agree >= min_agreement)
    return ParityReport(
        precision=precision,
        images=len(images),
        source=source,
        max_abs_diff=mx,
        mean_abs_diff=mean,
        top1_agreement=agree,
        max_abs_diff_limit=max_abs_diff,
        min_agreement=min_agreement,
        reference=f"torch {torch.__version__} fp32",
        runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider",
        batch_sizes=batch_sizes,
        passed=passed,
    )
