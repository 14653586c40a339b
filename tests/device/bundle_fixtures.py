"""A small real bundle for the bundle/signing tests, built without torch (the device side never has it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.bundle import Bundle, InputSpec, Manifest, OutputSpec, write_bundle
from device.contract import BATCH_DIM, INPUT_NAME, MODEL_NAME, OUTPUT_NAMES


def write_linear_onnx(path: Path, *, classes: int = 3, size: int = 8, seed: int = 0) -> Path:
    """A genuine ONNX classifier (Flatten -> Gemm) over a 3xSxS input with a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(3 * size * size, classes)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(classes, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [INPUT_NAME], ["flat"]),
            helper.make_node("Gemm", ["flat", "w", "b"], [OUTPUT_NAMES["classify"]]),
        ],
        "linear",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAMES["classify"], TensorProto.FLOAT, [BATCH_DIM, classes])],
        initializer=[w, b],
    )
    # IR 8 is what opset 17 needs; onnx's default (the newest IR) is ahead of what onnxruntime reads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_bundle(root: Path, *, extra: dict[str, bytes] | None = None) -> Bundle:
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    files = {MODEL_NAME: write_linear_onnx(src / MODEL_NAME)}
    for name, data in (extra or {}).items():
        (src / name).write_bytes(data)
        files[name] = src / name
    manifest = Manifest(
        name="linear-test",
        version="1",
        task="classify",
        labels=("a", "b", "c"),
        input=InputSpec(name=INPUT_NAME, shape=(BATCH_DIM, 3, 8, 8)),
        outputs=(OutputSpec(name=OUTPUT_NAMES["classify"], shape=(BATCH_DIM, 3), meaning="logits"),),
    )
    return write_bundle(root / "bundle", manifest, files)


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))
