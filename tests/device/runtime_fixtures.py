"""Small real models and bundles for the device-runtime tests (no training needed).

`tiny_classifier` writes a real ONNX graph (Conv 3x3 -> ReLU -> global average pool -> Gemm), fixed weights,
and `reference_logits` computes the same function in numpy, so a backend's output can be checked exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.bundle import Bundle, InputSpec, Manifest, OutputSpec, write_bundle

LABELS = ("red", "green", "blue")
SIZE = 32


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "conv_w": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, 4).astype(np.float32),
        "fc_w": rng.normal(0, 1.0, (3, 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 3).astype(np.float32),
    }


def tiny_classifier_onnx(path: Path, *, batch: int | str = "batch", input_name: str = "images") -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = weights()
    nodes = [
        helper.make_node("Conv", [input_name, "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference_logits(batch: np.ndarray) -> np.ndarray:
    """The tiny classifier in numpy (float64), for exact comparisons."""
    w = weights()
    x = np.pad(batch.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = batch.shape
    conv = np.zeros((n, 4, h, wd))
    for dy in range(3):
        for dx in range(3):
            patch = x[:, :, dy : dy + h, dx : dx + wd]
            conv += np.einsum("nchw,oc->nohw", patch, w["conv_w"][:, :, dy, dx])
    conv += w["conv_b"][None, :, None, None]
    pooled = np.maximum(conv, 0).mean(axis=(2, 3))
    return pooled @ w["fc_w"].T + w["fc_b"]


def classify_manifest(input_name: str = "images", resize: str = "stretch") -> Manifest:
    return Manifest(
        name="tiny",
        version="1",
        task="classify",
        labels=LABELS,
        input=InputSpec(
            name=input_name,
            shape=("batch", 3, SIZE, SIZE),
            color_order="RGB",
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
            resize=resize,  # type: ignore[arg-type]
        ),
        outputs=(OutputSpec(name="logits", shape=("batch", 3), meaning="logits"),),
    )


def tiny_bundle(tmp: Path, **kw: str) -> Bundle:
    onnx_path = tiny_classifier_onnx(tmp / "src.onnx")
    return write_bundle(tmp / "bundle", classify_manifest(**kw), {"model.onnx": onnx_path})


def fastestdet_bundle(data_root: Path, out: Path) -> Bundle:
    """The real FastestDet COCO detector wrapped as a detect bundle (as scripts/fastestdet_bundle.py does)."""
    import sys

    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "scripts"))
    try:
        from fastestdet_bundle import make_bundle
    finally:
        sys.path.pop(0)
    return make_bundle(data_root / "fastestdet", out)


def colour_images(folder: Path, n: int = 6, size: tuple[int, int] = (48, 64)) -> list[Path]:
    """Write n solid-colour PNGs (BGR) cycling red, green, blue; return their paths in name order."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    paths = []
    rng = np.random.default_rng(1)
    for i in range(n):
        img = np.zeros((*size, 3), np.uint8)
        img[:] = colours[i % 3]
        img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        p = folder / f"{i:04d}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths
