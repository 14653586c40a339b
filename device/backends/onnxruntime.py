"""ONNX Runtime backend: TensorRT, CUDA and CPU execution providers, in that order, when present."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from device.backends.base import (
    BackendError,
    BackendOptions,
    input_batch_limit,
    module_missing,
    register_backend,
    run_in_chunks,
    warm_up,
)
from device.bundle import Bundle
from device.errors import require

log = logging.getLogger(__name__)

# Fastest first. Azure, OpenVINO and the rest are left out: this device only ships these three.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _probe() -> str | None:
    return module_missing("onnxruntime")


def provider_options(available: list[str], opts: BackendOptions) -> list[tuple[str, dict[str, Any]]]:
    """The providers to ask for, with their options; precision other than fp32 needs the TensorRT provider."""
    chosen: list[tuple[str, dict[str, Any]]] = []
    for p in PROVIDER_ORDER:
        if p not in available:
            continue
        o: dict[str, Any] = {}
        if p == "TensorrtExecutionProvider":
            o["trt_fp16_enable"] = opts.precision in ("fp16", "int8")
            o["trt_int8_enable"] = opts.precision == "int8"
            if opts.engine_cache is not None:
                o["trt_engine_cache_enable"] = True
                o["trt_engine_cache_path"] = str(opts.engine_cache)
            if opts.dla_core is not None:
                o["trt_dla_enable"] = True
                o["trt_dla_core"] = opts.dla_core
        chosen.append((p, o))
    if opts.precision != "fp32" and not any(p == "TensorrtExecutionProvider" for p, _ in chosen):
        # STYLE 4: an unsupported precision raises instead of quietly running fp32.
        raise BackendError(
            f"onnxruntime here has no TensorRT execution provider, so it cannot run precision "
            f"{opts.precision}; use precision fp32 or the tensorrt backend"
        )
    if not chosen:
        raise BackendError(f"onnxruntime offers none of the providers {', '.join(PROVIDER_ORDER)}")
    return chosen


@register_backend("onnxruntime", rank=10, probe=_probe)
class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, opts: BackendOptions) -> None:
        ort = require(
            "onnxruntime", "the onnxruntime backend", "pip install onnxruntime (or onnxruntime-gpu)"
        )
        self.manifest = bundle.manifest
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1  # sequential graphs: inter-op threads would only spin
        if opts.threads:
            so.intra_op_num_threads = opts.threads
        # Idle intra-op threads spin for a while after each run by default; in the daemon that spinning takes the
        # cores the capture, locator and decode threads need between two inferences (measured: the demo bundle's
        # pipeline ran at 0.26 of the bare backend with spinning, see docs/benchmarks/device.md).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: the providers' info lines would flood journald
        if opts.engine_cache is not None:
            opts.engine_cache.mkdir(parents=True, exist_ok=True)
        providers = provider_options(ort.get_available_providers(), opts)
        if not bundle.model_path.is_file():
            raise BackendError(f"{bundle.root}: no model.onnx in the bundle")
        try:
            self.session = ort.InferenceSession(
                str(bundle.model_path),
                sess_options=so,
                providers=[p for p, _ in providers],
                provider_options=[o for _, o in providers],
            )
        except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
            raise BackendError(
                f"onnxruntime cannot load {bundle.model_path}: {str(exc).splitlines()[0]}"
            ) from exc
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        want = self.manifest.input.name
        if want not in [i.name for i in inputs]:
            raise BackendError(
                f"{bundle.model_path}: the manifest names input '{want}' but the model's inputs are "
                f"{[i.name for i in inputs]}"
            )
        meta = next(i for i in inputs if i.name == want)
        self._input_name = want
        self._dtype = (
            np.float16
            if meta.type == "tensor(float16)"
            else (np.uint8 if meta.type == "tensor(uint8)" else np.float32)
        )
        self._batch_limit = input_batch_limit(tuple(meta.shape))
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info(
            "onnxruntime %s: providers %s, model %s",
            ort.__version__,
            self.providers,
            self.manifest.model_id(),
        )
        spec = self.manifest.input
        warm_up(self, (spec.channels, spec.height, spec.width), opts.warmup)

    @property
    def max_batch(self) -> int | None:
        """The model's fixed batch size, or None when dynamic (bigger batches are split)."""
        return self._batch_limit

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(self.output_names, {self._input_name: batch})
        return dict(zip(self.output_names, out, strict=True))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.dtype != self._dtype:
            batch = batch.astype(self._dtype)
        return run_in_chunks(self._run, np.ascontiguousarray(batch), self._batch_limit)

    def close(self) -> None:
        self.__dict__.pop("session", None)
