"""FP16 and INT8 bundles behind the accuracy gate, and the TensorRT calibration cache, on a trained CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import normalize

from device.bundle import verify_bundle
from device.contract import CALIB_CACHE_NAME, MODEL_NAME
from export.build import ExportOptions, ImageSet, build_bundle
from export.calibration import format_cache, hex_to_scale, parse_cache, scale_to_hex
from export.errors import AccuracyGateError


def _sets(mnist: dict[str, np.ndarray]) -> tuple[ImageSet, ImageSet, ImageSet]:
    parity = ImageSet(normalize(mnist["test_x"][:32]), mnist["test_y"][:32], "mnist:val[32]")
    heldout = ImageSet(normalize(mnist["test_x"]), mnist["test_y"], "mnist:val[600]")
    calib = ImageSet(normalize(mnist["train_x"][:128]), mnist["train_y"][:128], "mnist:train[128]")
    return parity, heldout, calib


def _build(out: Path, tiny_trained, mnist, options: ExportOptions, calib: ImageSet | str | None = "train"):
    """build_bundle on the trained CNN with the MNIST parity and held-out sets; calib "train": MNIST train[128]."""
    model, meta = tiny_trained
    parity, heldout, train = _sets(mnist)
    calib_set = train if calib == "train" else calib
    return build_bundle(model, meta, out, options, parity_set=parity, calib_set=calib_set, heldout_set=heldout)


def _ops(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_bundle_passes_the_gate_when_calibrated_on_the_right_images(tmp_path: Path, tiny_trained, mnist):
    res = _build(tmp_path / "int8", tiny_trained, mnist, ExportOptions(precision="int8"))
    m = verify_bundle(tmp_path / "int8").manifest
    assert m.precision == "int8" and m.input.dtype == "float32"
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(tmp_path / "int8" / MODEL_NAME)
    gate = m.parity["accuracy_gate"]
    assert gate["passed"] and gate["images"] == 600 and gate["fp32_top1"] > 0.9
    assert gate["drop_points"] <= 1.0 and res.gate is not None and res.gate.passed
    assert m.parity["int8"]["calibration"]["source"] == "mnist:train[128]"
    assert m.parity["int8"]["top1_agreement"] > 0.95  # measured and recorded, not a limit


def test_int8_gate_refuses_a_model_calibrated_on_wrong_images(tmp_path: Path, tiny_trained, mnist):
    """Calibrating on blank frames (e.g. a camera with its cap on) gives ranges that clip every real digit."""
    blank = np.zeros((128, 28, 28), np.uint8)
    wrong = ImageSet(normalize(blank), np.zeros(128, np.int64), "blank frames")
    out = tmp_path / "int8-wrong"
    with pytest.raises(AccuracyGateError, match=r"loses .* points of top-1 against FP32") as err:
        _build(out, tiny_trained, mnist, ExportOptions(precision="int8"), calib=wrong)
    assert err.value.exit_code == 4 and "no bundle written" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".int8-wrong.partial-*"))


def test_gate_tolerance_is_the_users(tmp_path: Path, tiny_trained, mnist):
    """The same wrong calibration passes when the user allows a 100-point drop: the gate measures."""
    wrong = ImageSet(normalize(np.zeros((16, 28, 28), np.uint8)), np.zeros(16, np.int64), "blank frames")
    res = _build(tmp_path / "b", tiny_trained, mnist, ExportOptions(precision="int8", gate_tolerance_points=100),
                 calib=wrong)
    assert res.gate is not None and res.gate.passed and res.gate.drop_points > 1.0


def test_fp16_bundle(tmp_path: Path, tiny_trained, mnist):
    import onnx

    _build(tmp_path / "fp16", tiny_trained, mnist, ExportOptions(precision="fp16"), calib=None)
    m = verify_bundle(tmp_path / "fp16").manifest
    assert m.precision == "fp16" and m.card["precision"] == "fp16"
    proto = onnx.load(str(tmp_path / "fp16" / MODEL_NAME))
    assert {i.data_type for i in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # device input unchanged
    assert m.parity["accuracy_gate"]["passed"] and m.parity["fp16"]["max_abs_diff"] < 0.05


def test_float_bundle_with_calib_carries_a_tensorrt_cache(tmp_path: Path, tiny_trained, mnist):
    import onnx

    model, meta = tiny_trained
    parity, _, calib = _sets(mnist)
    build_bundle(model, meta, tmp_path / "b", ExportOptions(), parity_set=parity, calib_set=calib)
    b = verify_bundle(tmp_path / "b")
    assert CALIB_CACHE_NAME in b.manifest.files
    tag, algo, scales = parse_cache((b.root / CALIB_CACHE_NAME).read_text())
    assert algo == "EntropyCalibration2" and tag.isdigit()
    proto = onnx.load(str(b.root / MODEL_NAME))
    conv_outputs = {n.output[0] for n in proto.graph.node if n.op_type == "Conv"}
    assert "images" in scales and conv_outputs <= set(scales)
    # the input is normalised MNIST: |x| <= (1 - 0.1307) / 0.3081 = 2.82, so its scale is at most 2.82 / 127
    assert 0 < scales["images"] <= 2.83 / 127
    assert b.manifest.parity["calibration"]["tensors"] == len(scales)


def test_cache_format_round_trip():
    assert scale_to_hex(1.0) == "3f800000"
    assert hex_to_scale("3c010a14") == pytest.approx(0.00787, rel=1e-3)
    text = format_cache({"images": 2.0, "conv_out": 0.0})
    assert text.splitlines()[0] == "TRT-8601-EntropyCalibration2"
    _, _, scales = parse_cache(text)
    assert scales["images"] == pytest.approx(2.0 / 127) and scales["conv_out"] > 0


def _zero_points(path: Path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    return [
        numpy_helper.to_array(inits[n.input[2]])
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]


@pytest.mark.parametrize(("scheme", "dtype"), [("onnxruntime", np.uint8), ("tensorrt", np.int8)])
def test_int8_schemes(tmp_path: Path, tiny_trained, mnist, scheme: str, dtype: type) -> None:
    """onnxruntime: uint8 activations (fast on CPUs); tensorrt: int8 with zero points of 0 (explicit quantization)."""
    _build(tmp_path / scheme, tiny_trained, mnist, ExportOptions(precision="int8", int8_scheme=scheme))
    m = verify_bundle(tmp_path / scheme).manifest
    assert m.card["quantization"]["scheme"] == scheme and m.parity["accuracy_gate"]["passed"]
    zps = _zero_points(tmp_path / scheme / MODEL_NAME)
    assert zps and {z.dtype for z in zps} == {np.dtype(dtype)}
    if scheme == "tensorrt":
        assert all(not z.any() for z in zps)


def test_int8_logits_stay_float(tmp_path: Path, tiny_trained, mnist) -> None:
    """The head writing the logits is not quantized: INT8 logits on a 256-value grid would tie at the top."""
    import onnx

    _build(tmp_path / "b", tiny_trained, mnist, ExportOptions(precision="int8"))
    heldout = _sets(mnist)[1]
    proto = onnx.load(str(tmp_path / "b" / MODEL_NAME))
    out = proto.graph.output[0].name
    producer = next(n for n in proto.graph.node if out in n.output)
    assert producer.op_type in ("Gemm", "MatMul", "Add")
    from export.parity import onnx_session, run_onnx

    logits = run_onnx(onnx_session(tmp_path / "b" / MODEL_NAME), heldout.images[:64])
    assert len(np.unique(logits)) > 0.9 * logits.size  # continuous, not a 256-level grid
