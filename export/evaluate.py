"""Evaluate the deployed artifact itself: a bundle run by a device backend on raw images of a data set.

Images go the way a camera frame goes on the device (BGR uint8 -> device.preprocess.Preprocessor from the
manifest -> backend -> device.postprocess.classify), so a mismatch between training preprocessing and the
manifest shows up here as lost accuracy. Metrics have the training metrics' format (training.metrics).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError

log = logging.getLogger(__name__)


def label_map(bundle_labels: tuple[str, ...], data_labels: list[str]) -> np.ndarray:
    """Data-set class index -> bundle class index, matched by name; refuses data with unknown classes."""
    index = {name: i for i, name in enumerate(bundle_labels)}
    missing = [name for name in data_labels if name not in index]
    if missing:
        raise ExportError(
            f"the data set has {len(missing)} classes the bundle does not know "
            f"(e.g. {', '.join(missing[:3])}); evaluate with the data the model was trained on"
        )
    return np.asarray([index[name] for name in data_labels], dtype=np.int64)


def evaluate_bundle(
    bundle_path: str | Path,
    spec: str,
    *,
    split: str = "val",
    backend: str = "onnxruntime",
    batch: int = 16,
    threads: int = 0,
    limit: int = 0,
) -> dict[str, Any]:
    """top1, top5, per class, confusion of the bundle on `split` of `spec` (`limit` > 0: that many images)."""
    import torch

    from device.backends import create_backend
    from device.bundle import verify_bundle
    from device.contract import OUTPUT_NAMES
    from device.postprocess import classify
    from device.preprocess import Preprocessor
    from export.samples import iter_raw_images
    from training.data import build_dataset
    from training.metrics import summarise

    bundle = verify_bundle(bundle_path)
    m = bundle.manifest
    if m.task != "classify":
        raise ExportError(f"edgesort eval measures classifiers; this bundle's task is {m.task}")
    data_labels = list(build_dataset(spec, split).info.labels)
    to_bundle = label_map(m.labels, data_labels)
    # The bundle's own precision is baked into model.onnx (FP16 casts, INT8 Q/DQ); "fp32" here only means
    # "no further conversion by the backend" (ONNX Runtime runs the graph as it is).
    runner = create_backend(bundle, backend, threads=threads, precision="fp32", warmup=1)
    out_name = next((o.name for o in m.outputs if o.name == OUTPUT_NAMES["classify"]), m.outputs[0].name)
    pre = Preprocessor(m.input, max_batch=batch)
    n = len(m.labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    top5_hits = 0
    infer_s = 0.0
    images: list[np.ndarray] = []
    targets: list[int] = []

    def flush() -> None:
        nonlocal top5_hits, infer_s
        x = pre(images)
        t0 = time.perf_counter()
        logits = runner.infer(x)[out_name]
        infer_s += time.perf_counter() - t0
        _, top = classify(logits, k=5, probabilities=any(o.meaning == "probabilities" for o in m.outputs))
        y = np.asarray(targets)
        np.add.at(confusion, (y, top[:, 0]), 1)
        top5_hits += int((top == y[:, None]).any(axis=1).sum())
        images.clear()
        targets.clear()

    try:
        for img, label in iter_raw_images(spec, split, limit):
            images.append(img)
            targets.append(int(to_bundle[label]))
            if len(images) == batch:
                flush()
        if images:
            flush()
    finally:
        runner.close()
    if confusion.sum() == 0:
        raise ExportError(f"the {split} split of '{spec}' holds no images")
    result = summarise(torch.from_numpy(confusion), top5_hits, 0.0, list(m.labels), split)
    result.pop("loss", None)  # the bundle gives no loss: no training criterion on the device
    result.update(
        {
            "bundle": str(bundle.root),
            "model_id": m.model_id(),
            "precision": m.precision,
            "backend": runner.name,
            "data": spec,
            "inference_ms_per_image": 1000.0 * infer_s / int(confusion.sum()),
        }
    )
    return result
