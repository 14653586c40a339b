"""Reduced precision: an FP16 ONNX variant, INT8 by static quantization (QDQ), and the accuracy gate.

INT8 uses onnxruntime.quantization with symmetric signed 8-bit activations and per-channel weights in QDQ
format: ONNX Runtime runs it on CPU, and TensorRT reads the same Q/DQ scales (explicit quantization), so one
file serves both. The gate runs FP32 and the variant through ONNX Runtime on the same held-out images and
refuses the variant when top-1 drops by more than the tolerance (percentage points).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.contract import INPUT_NAME
from device.errors import require
from export.errors import ExportError

if TYPE_CHECKING:
    import onnx

    from export.build import ImageSet

CALIB_BATCH = 8
# Two INT8 schemes, because the fastest file for ONNX Runtime on a CPU is one TensorRT cannot read:
# - "onnxruntime": uint8 activations (asymmetric), int8 per-channel weights. On x86 (VNNI) this runs EfficientNet-
#   Lite0 about 2x faster than FP32, while symmetric int8 activations run slower than FP32 there.
# - "tensorrt": int8 activations and weights, both symmetric (zero point 0), which TensorRT's explicit
#   quantization requires. (TensorRT can also build INT8 from a float bundle's calib.cache.)
INT8_SCHEMES: dict[str, dict[str, Any]] = {
    "onnxruntime": {"activation_type": "QUInt8", "weight_type": "QInt8", "activation_symmetric": False},
    "tensorrt": {"activation_type": "QInt8", "weight_type": "QInt8", "activation_symmetric": True},
}
INT8_COMMON: dict[str, Any] = {
    "quant_format": "QDQ",
    "per_channel": True,
    "weight_symmetric": True,
    "calibrate_method": "MinMax",
    "pre_process": "onnxruntime.quantization.shape_inference.quant_pre_process",
    "float_head": True,  # the node(s) writing the logits stay in float (see output_nodes)
}


@dataclass(frozen=True)
class GateReport:
    precision: str
    images: int
    source: str
    fp32_top1: float
    top1: float
    drop_points: float  # (fp32_top1 - top1) * 100
    tolerance_points: float
    agreement: float  # share of images where FP32 and the variant predict the same class
    passed: bool

    def summary(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return (
            f"{verdict}: top-1 {100 * self.top1:.2f}% vs FP32 {100 * self.fp32_top1:.2f}% "
            f"(drop {self.drop_points:.2f} points, tolerance {self.tolerance_points:.2f}) on {self.images} "
            f"held-out images of {self.source}"
        )

    def reason(self) -> str:
        return (
            f"the {self.precision} model loses {self.drop_points:.2f} points of top-1 against FP32 "
            f"({100 * self.top1:.2f}% vs {100 * self.fp32_top1:.2f}% on {self.images} held-out images of "
            f"{self.source}), more than the {self.tolerance_points:.2f} allowed; no bundle written"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


class ImageReader:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed images, in batches of CALIB_BATCH."""

    def __init__(self, images: np.ndarray, batch: int = CALIB_BATCH) -> None:
        self.images = images.astype(np.float32, copy=False)
        self.batch = batch
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = (
            {INPUT_NAME: np.ascontiguousarray(self.images[i : i + self.batch])}
            for i in range(0, len(self.images), self.batch)
        )


def to_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """FP16 weights and arithmetic with FP32 input and output (the device's preprocessing is unchanged)."""
    import onnx

    float16 = require("onnxruntime.transformers.float16", "FP16 conversion", "pip install onnxruntime")
    proto = onnx.load(str(src))
    try:
        half = float16.convert_float_to_float16(proto, keep_io_types=True)
    except Exception as exc:  # the converter raises assorted types for unsupported graphs
        raise ExportError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
    sort_nodes(half.graph)
    onnx.save(half, str(dst))
    return {"conversion": "onnxruntime.transformers.float16, keep_io_types"}


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Topological order, in place. The FP16 converter appends its input Casts at the end of the node list,
    which ONNX Runtime accepts but onnx.checker (and TensorRT's parser) refuse; onnx has no public sort."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(x in known for x in n.input)]
        if not ready:
            raise ExportError(f"the graph has a cycle or a dangling input near node '{pending[0].name}'")
        for n in ready:
            known.update(n.output)
        ordered.extend(ready)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def output_nodes(path: Path) -> list[str]:
    """Names of the nodes that write the graph's outputs (the classifier head).

    They stay in float: quantized logits take one of 256 values, so near the top two classes tie, and which one
    "wins" then depends on the tie-break of whoever reads them (measured: 1 point of top-1 on Grocery val).
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if outputs.intersection(n.output)]


def to_int8(src: Path, dst: Path, calib_set: ImageSet, scheme: str = "onnxruntime") -> dict[str, Any]:
    """Static INT8 quantization (QDQ) calibrated on `calib_set`, after onnxruntime's recommended pre-processing."""
    q = require("onnxruntime.quantization", "INT8 quantization", "pip install onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise ExportError(f"unknown INT8 scheme '{scheme}' ({', '.join(INT8_SCHEMES)})")
    settings = {**INT8_COMMON, **INT8_SCHEMES[scheme], "scheme": scheme}
    pre = dst.with_suffix(".pre.onnx")
    try:
        # Shape inference and graph optimisation (Conv+Clip fusion etc.) before quantisation; the symbolic
        # shape pass is skipped: our graphs have static shapes except the batch.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        head = output_nodes(pre)
        q.quantize_static(
            str(pre),
            str(dst),
            ImageReader(calib_set.images),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=getattr(q.QuantType, settings["activation_type"]),
            weight_type=getattr(q.QuantType, settings["weight_type"]),
            calibrate_method=q.CalibrationMethod.MinMax,
            nodes_to_exclude=head,
            extra_options={"ActivationSymmetric": settings["activation_symmetric"], "WeightSymmetric": True},
        )
    except Exception as exc:  # onnxruntime.quantization raises assorted types; the message names the node
        raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return {
        "quantization": settings,
        "calibration": {"source": calib_set.source, "images": len(calib_set.images)},
    }


def make_variant(
    fp32_path: Path,
    work: Path,
    precision: str,
    *,
    calib_set: ImageSet | None,
    threads: int = 1,
    int8_scheme: str = "onnxruntime",
) -> tuple[Path, dict[str, Any]]:
    """Write the `precision` variant of an FP32 ONNX file into `work`; return its path and a description."""
    dst = work / f"model.{precision}.onnx"
    if precision == "fp16":
        info = to_fp16(fp32_path, dst)
    elif precision == "int8":
        if calib_set is None:
            raise ExportError("int8 export needs calibration images (--calib SPEC)")
        info = to_int8(fp32_path, dst, calib_set, int8_scheme)
    else:
        raise ExportError(f"no reduced-precision variant '{precision}' (fp16 or int8)")
    return dst, info


def top1(onnx_path: Path, images: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Predicted class per image, through ONNX Runtime."""
    from export.parity import onnx_session, run_onnx

    return run_onnx(onnx_session(onnx_path, threads=threads), images, (32,)).argmax(axis=1)


def accuracy_gate(
    fp32_path: Path,
    variant_path: Path,
    heldout: ImageSet,
    *,
    precision: str,
    tolerance_points: float = 1.0,
    threads: int = 1,
) -> GateReport:
    """Top-1 of the variant against FP32 on held-out labelled images; `passed` False when it drops too far."""
    if tolerance_points < 0:
        raise ExportError(f"the accuracy tolerance must be >= 0 points, not {tolerance_points}")
    ref = top1(fp32_path, heldout.images, threads=threads)
    got = top1(variant_path, heldout.images, threads=threads)
    acc32 = float(np.mean(ref == heldout.labels))
    acc = float(np.mean(got == heldout.labels))
    drop = 100.0 * (acc32 - acc)
    return GateReport(
        precision=precision,
        images=len(heldout.labels),
        source=heldout.source,
        fp32_top1=acc32,
        top1=acc,
        drop_points=drop,
        tolerance_points=tolerance_points,
        agreement=float(np.mean(ref == got)),
        # a tiny epsilon: a drop of exactly the tolerance (e.g. 3 of 300 images at 1 point) passes
        passed=drop <= tolerance_points + 1e-9,
    )
