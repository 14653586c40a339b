"""TensorRT INT8 calibration cache, made on the workstation from the same calibration images as INT8 QDQ.

TensorRT cannot run here, so the activation ranges are collected by onnxruntime.quantization's calibrator
(entropy method, like TensorRT's own IInt8EntropyCalibrator2) over every float tensor of the FP32 graph, and
written in TensorRT's calibration cache format, which is small enough to write by hand:

    TRT-8601-EntropyCalibration2
    <tensor name>: <scale as the big-endian hex of a float32>

where scale = max(|lowest|, |highest|) / 127 (symmetric INT8). TensorRT's ONNX parser names its tensors after
the ONNX tensor names, so the keys line up. device/engines.py feeds this file to TensorRT through a
calibrator that only reads the cache, and restamps the header with the TensorRT version it runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.errors import require
from export.errors import ExportError

if TYPE_CHECKING:
    from export.build import ImageSet

log = logging.getLogger(__name__)

ALGORITHM = "EntropyCalibration2"
DEFAULT_TRT_TAG = "8601"  # TensorRT 8.6.1 (JetPack 6); engines.py restamps it for the installed version
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def collect_ranges(fp32_path: Path, calib_set: ImageSet, *, method: str = "Entropy") -> dict[str, float]:
    """amax = max(|lowest|, |highest|) per float tensor of the graph (the input included)."""
    cal = require("onnxruntime.quantization.calibrate", "INT8 calibration", "pip install onnxruntime")
    from export.precision import ImageReader

    with tempfile.TemporaryDirectory(prefix="edgesort-calib-") as tmp:
        try:
            calibrator = cal.create_calibrator(
                str(fp32_path),
                None,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=getattr(cal.CalibrationMethod, method),
                extra_options={"symmetric": True},
            )
            calibrator.collect_data(ImageReader(calib_set.images))
            # The entropy calibrator print()s its progress; keep our stdout to the command's own lines.
            chatter = io.StringIO()
            with contextlib.redirect_stdout(chatter):
                data = calibrator.compute_data()
            log.debug("onnxruntime calibrator: %s", chatter.getvalue().strip())
        except Exception as exc:  # onnxruntime raises assorted types; the message names the tensor
            raise ExportError(f"calibration failed: {type(exc).__name__}: {exc}") from exc
    ranges: dict[str, float] = {}
    for name, td in data.items():
        lo, hi = td.range_value
        ranges[name] = float(max(abs(float(np.asarray(lo).min())), abs(float(np.asarray(hi).max()))))
    return ranges


def format_cache(ranges: dict[str, float], *, trt_tag: str = DEFAULT_TRT_TAG) -> str:
    lines = [f"TRT-{trt_tag}-{ALGORITHM}"]
    for name in sorted(ranges):
        amax = ranges[name]
        # A tensor that never left 0 in calibration still needs a positive scale; TensorRT refuses 0.
        scale = max(amax, 1e-8) / 127.0
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> tuple[str, str, dict[str, float]]:
    """(TensorRT tag, algorithm, scale per tensor) from a calibration cache's text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not (m := _HEADER.match(lines[0].strip())):
        raise ExportError("not a TensorRT calibration cache: the first line is not 'TRT-<version>-<algorithm>'")
    scales = {}
    for ln in lines[1:]:
        name, sep, value = ln.rpartition(": ")
        if not sep:
            raise ExportError(f"malformed calibration cache line: {ln!r}")
        scales[name] = hex_to_scale(value.strip())
    return m.group(1), m.group(2), scales


def write_trt_calibration_cache(
    fp32_path: Path, calib_set: ImageSet, out: Path, *, trt_tag: str = DEFAULT_TRT_TAG, threads: int = 1
) -> dict[str, Any]:
    """Write `out` (calib.cache) and return a description for the manifest."""
    del threads  # the calibrator's session uses onnxruntime's defaults; kept for a uniform signature
    ranges = collect_ranges(fp32_path, calib_set)
    out.write_text(format_cache(ranges, trt_tag=trt_tag))
    log.info("TensorRT calibration cache %s: %d tensors from %s", out, len(ranges), calib_set.source)
    return {
        "file": out.name,
        "format": f"TensorRT calibration cache (TRT-{trt_tag}-{ALGORITHM})",
        "method": "onnxruntime entropy calibrator, symmetric, scale = amax / 127",
        "source": calib_set.source,
        "images": len(calib_set.images),
        "tensors": len(ranges),
    }
