"""TensorRT backend (Jetson, NVIDIA GPUs): a cached engine, page-locked buffers, one CUDA stream.

The engine comes from `device.engines.get_or_build_engine` (built on first use, cached under a key of model
sha256, TensorRT version, GPU/SoC, precision and DLA core; rebuilt on mismatch). I/O uses the name-based API
of TensorRT >= 8.6 / 10 (`num_io_tensors`, `set_tensor_address`, `set_input_shape`, `execute_async_v3`).

Per inference: copy the batch into a page-locked host buffer, one async host-to-device copy, enqueue, async
device-to-host copies of the outputs, one stream synchronise. Buffers are sized once for the largest batch the
engine's optimisation profile allows.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.backends.base import BackendError, BackendOptions, register_backend, warm_up
from device.bundle import Bundle
from device.errors import MissingDependencyError, require

log = logging.getLogger(__name__)


def _probe() -> str | None:
    for mod, hint in (("tensorrt", "JetPack provides it"), ("pycuda", "pip install pycuda")):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        # `tensorrt-stubs` (type checking) installs a namespace package with no code: not TensorRT.
        if spec is None or spec.origin in (None, "namespace"):
            return f"the Python module '{mod}' is not installed ({hint})"
    return None


@dataclass
class _Binding:
    name: str
    is_input: bool
    dtype: Any
    host: Any  # page-locked numpy array, flat, sized for the largest batch
    device: Any  # pycuda DeviceAllocation


@register_backend("tensorrt", rank=0, probe=_probe)
class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, bundle: Bundle, opts: BackendOptions) -> None:
        if _probe() is not None:
            raise MissingDependencyError(
                "tensorrt", "the tensorrt backend", "install JetPack (TensorRT) and pycuda"
            )
        import tensorrt as trt  # here, not at module level: present only on JetPack / GPU machines

        cuda = require("pycuda.driver", "the tensorrt backend", "pip install pycuda")
        engines = require("device.engines", "the tensorrt backend", "this install lacks device/engines.py")
        self._cuda = cuda
        cuda.init()
        # The primary context is shared with anything else on this GPU; pushing it per call makes the backend
        # usable from the pipeline's infer thread, which is not the thread that built it.
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            cache = opts.engine_cache
            if cache is None:
                raise BackendError("the tensorrt backend needs an engine cache folder (paths.state_dir)")
            engine_path = engines.get_or_build_engine(
                bundle, precision=opts.precision, dla_core=opts.dla_core, cache_dir=cache
            )
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if engine is None:
                raise BackendError(
                    f"{engine_path}: TensorRT could not deserialize the engine (see the log above)"
                )
            self.engine = engine
            self.context = engine.create_execution_context()
            self.stream = cuda.Stream()
            self._bindings: dict[str, _Binding] = {}
            self._input = bundle.manifest.input.name
            self.max_batch = self._allocate()
            self.output_names = [b.name for b in self._bindings.values() if not b.is_input]
        finally:
            self._ctx.pop()
        log.info(
            "tensorrt %s: %s (%s), max batch %d",
            trt.__version__,
            engine_path.name,
            opts.precision,
            self.max_batch,
        )
        spec = bundle.manifest.input
        warm_up(self, (spec.channels, spec.height, spec.width), opts.warmup)

    def _allocate(self) -> int:
        import tensorrt as trt

        cuda, engine = self._cuda, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if self._input not in names:
            raise BackendError(f"the engine has no input '{self._input}' (its tensors: {names})")
        in_shape = tuple(engine.get_tensor_shape(self._input))
        if in_shape[0] == -1:  # dynamic batch: the profile's maximum sizes every buffer
            max_batch = int(engine.get_tensor_profile_shape(self._input, 0)[2][0])
        else:
            max_batch = int(in_shape[0])
        for name in names:
            shape = tuple(engine.get_tensor_shape(name))
            per_item = int(np.prod([d for d in shape[1:]]))
            if per_item <= 0:
                raise BackendError(f"tensor '{name}' has a dynamic dimension other than the batch: {shape}")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(per_item * max_batch, dtype)
            dev = cuda.mem_alloc(host.nbytes)
            self.context.set_tensor_address(name, int(dev))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self._bindings[name] = _Binding(name, is_input, dtype, host, dev)
        return max_batch

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        n = batch.shape[0]
        if n > self.max_batch:  # the engine cannot take it in one go: split, as the profile allows
            parts = [self.infer(batch[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cuda = self._cuda
        self._ctx.push()
        try:
            inp = self._bindings[self._input]
            flat = inp.host[: batch.size]
            np.copyto(flat, batch.ravel(), casting="unsafe")
            if not self.context.set_input_shape(self._input, tuple(batch.shape)):
                raise BackendError(f"the engine refuses input shape {tuple(batch.shape)}")
            cuda.memcpy_htod_async(inp.device, flat, self.stream)
            if not self.context.execute_async_v3(self.stream.handle):
                raise BackendError("TensorRT failed to enqueue the inference (see the log)")
            views = {}
            for name in self.output_names:
                b = self._bindings[name]
                shape = tuple(self.context.get_tensor_shape(name))
                view = b.host[: int(np.prod(shape))]
                cuda.memcpy_dtoh_async(view, b.device, self.stream)
                views[name] = (view, shape)
            self.stream.synchronize()
        finally:
            self._ctx.pop()
        # Copies: the page-locked buffers are overwritten by the next inference.
        return {k: v.reshape(s).astype(np.float32, copy=True) for k, (v, s) in views.items()}

    def close(self) -> None:
        if not hasattr(self, "_bindings"):
            return
        self._ctx.push()
        try:
            for b in self._bindings.values():
                b.device.free()
            self._bindings.clear()
            del self.context, self.engine
        finally:
            self._ctx.pop()
            self._ctx.detach()
