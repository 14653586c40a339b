"""PyTorch backend (development and GPU workstations): runs the bundle's PyTorch twin of model.onnx.

A bundle's portable model is model.onnx; PyTorch cannot run ONNX, so this backend needs a PyTorch twin the
exporter may add: `model.pt2` (torch.export, preferred since TorchScript is deprecated) or `model.ts`
(TorchScript). torch is imported in the constructor only: a Jetson may have NVIDIA's own torch or none.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from device.backends.base import BackendError, BackendOptions, module_missing, register_backend, warm_up
from device.bundle import Bundle
from device.errors import require

log = logging.getLogger(__name__)

TORCH_MODEL_NAMES = ("model.pt2", "model.ts")


def _probe() -> str | None:
    return module_missing("torch")


def torch_model_path(bundle: Bundle) -> Path | None:
    return next((bundle.path(n) for n in TORCH_MODEL_NAMES if bundle.path(n).is_file()), None)


@register_backend("torch", rank=20, probe=_probe)
class TorchBackend:
    name = "torch"

    def __init__(self, bundle: Bundle, opts: BackendOptions) -> None:
        torch = require("torch", "the torch backend", "install PyTorch (on a Jetson: NVIDIA's wheel)")
        path = torch_model_path(bundle)
        if path is None:
            raise BackendError(
                f"{bundle.root}: the torch backend runs a PyTorch model ({' or '.join(TORCH_MODEL_NAMES)}) "
                "and this bundle holds only model.onnx; use the onnxruntime or tensorrt backend"
            )
        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if opts.precision == "int8" or (opts.precision == "fp16" and self.device.type != "cuda"):
            raise BackendError(
                f"the torch backend cannot run precision {opts.precision} on {self.device.type}"
            )
        if opts.threads:
            torch.set_num_threads(opts.threads)
        try:
            if path.suffix == ".pt2":
                model = torch.export.load(str(path)).module().to(self.device)
            else:
                model = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError, OSError) as exc:
            raise BackendError(f"{path}: not a model torch can load ({exc})".splitlines()[0]) from exc
        self._half = opts.precision == "fp16"
        self.model = model.half() if self._half else model
        self.output_names = [o.name for o in bundle.manifest.outputs]
        log.info("torch %s on %s: %s", torch.__version__, self.device, path.name)
        spec = bundle.manifest.input
        warm_up(self, (spec.channels, spec.height, spec.width), opts.warmup)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            out = self.model(x.half() if self._half else x)
        if isinstance(out, dict):
            items = list(out.values())
        elif isinstance(out, (list, tuple)):
            items = list(out)
        else:
            items = [out]
        if len(items) != len(self.output_names):
            raise BackendError(
                f"the PyTorch model returns {len(items)} outputs, the manifest lists {len(self.output_names)}"
            )
        return {n: t.float().cpu().numpy() for n, t in zip(self.output_names, items, strict=True)}

    def close(self) -> None:
        self.__dict__.pop("model", None)
