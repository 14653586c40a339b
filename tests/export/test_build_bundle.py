"""FP32 export of a real trained CNN into a verified bundle, with parity on real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_helpers import normalize

from device.bundle import verify_bundle
from device.contract import INPUT_NAME, MANIFEST_NAME, MODEL_NAME, OUTPUT_NAMES
from export.build import ExportOptions, ImageSet, build_bundle
from export.errors import ExportError, ParityError
from export.onnx_export import read_metadata
from export.parity import onnx_session, run_onnx


def _set(mnist: dict[str, np.ndarray], n: int = 64) -> ImageSet:
    return ImageSet(normalize(mnist["test_x"][:n]), mnist["test_y"][:n], f"mnist:test[{n}]")


def test_fp32_bundle_is_complete_and_verifies(tmp_path: Path, tiny_trained, mnist) -> None:
    model, meta = tiny_trained
    out = tmp_path / "bundle"
    res = build_bundle(model, meta, out, ExportOptions(command="edgesort export x.pt"), parity_set=_set(mnist))
    b = verify_bundle(out)
    m = b.manifest
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, MODEL_NAME]
    assert m.task == "classify" and m.precision == "fp32" and m.labels == tuple(str(i) for i in range(10))
    assert m.input.name == INPUT_NAME and m.input.shape == ("batch", 1, 28, 28)
    assert m.input.color_order == "GRAY" and m.input.mean == pytest.approx((0.1307,))
    assert m.outputs[0].name == OUTPUT_NAMES["classify"] and m.outputs[0].meaning == "logits"
    assert m.parity["fp32"]["passed"] and m.parity["fp32"]["max_abs_diff"] <= 1e-4
    assert m.parity["fp32"]["top1_agreement"] == 1.0 and m.parity["fp32"]["images"] == 64
    assert (
        m.dataset["spec"].startswith("mnist:")
        and m.card["name"] == "lenet5-mnist-test"
        and m.card["export"]["opset"] >= 17
    )
    assert m.recipe.command == "edgesort export x.pt" and m.recipe.created
    assert res.parity["fp32"]["source"] == "mnist:test[64]"
    meta_props = read_metadata(out / MODEL_NAME)
    assert json.loads(meta_props["edgesort.card"])["arch"] == "lenet5"
    assert json.loads(meta_props["edgesort.labels"]) == list(m.labels)


def test_bundle_runs_with_any_batch_size(tmp_path: Path, tiny_trained, mnist) -> None:
    model, meta = tiny_trained
    build_bundle(model, meta, tmp_path / "b", ExportOptions(), parity_set=_set(mnist, 16))
    sess = onnx_session(tmp_path / "b" / MODEL_NAME)
    x = normalize(mnist["test_x"][:200])
    logits = run_onnx(sess, x, batch_sizes=(1, 3, 64))
    assert logits.shape == (200, 10)
    # Trained for two epochs: the exported model classifies real digits (not a constant answer).
    assert float(np.mean(logits.argmax(1) == mnist["test_y"][:200])) > 0.9


def test_parity_failure_writes_no_bundle(tmp_path: Path, tiny_trained, mnist, monkeypatch) -> None:
    """A PyTorch model that differs from what was exported (an ONNX file from other weights) is refused."""
    import export.build as build_mod

    model, meta = tiny_trained
    real_check = build_mod.export_onnx

    def export_other_weights(m, path, **kw):  # export a copy whose last layer is shifted by 1e-2
        import copy

        import torch

        other = copy.deepcopy(m)
        with torch.no_grad():
            other.classifier[-1].bias += 1e-2
        return real_check(other, path, **kw)

    monkeypatch.setattr(build_mod, "export_onnx", export_other_weights)
    out = tmp_path / "refused"
    with pytest.raises(ParityError, match="max abs diff"):
        build_bundle(model, meta, out, ExportOptions(), parity_set=_set(mnist, 16))
    assert not out.exists()
    assert not list(tmp_path.glob(".refused.partial-*"))


def test_existing_bundle_needs_force(tmp_path: Path, tiny_trained, mnist) -> None:
    model, meta = tiny_trained
    out = tmp_path / "b"
    build_bundle(model, meta, out, ExportOptions(), parity_set=_set(mnist, 8))
    with pytest.raises(ExportError, match="--force"):
        build_bundle(model, meta, out, ExportOptions(), parity_set=_set(mnist, 8))
    build_bundle(model, meta, out, ExportOptions(force=True, version="2"), parity_set=_set(mnist, 8))
    assert verify_bundle(out).manifest.version == "2"


def test_malformed_checkpoint_metadata_is_one_sentence(tmp_path: Path, tiny_trained, mnist) -> None:
    model, meta = tiny_trained
    with pytest.raises(ExportError, match="resize policy 'squash'"):
        build_bundle(model, {**meta, "resize": "squash"}, tmp_path / "x", ExportOptions(), parity_set=_set(mnist, 8))
    with pytest.raises(ExportError, match="10 classes but 3 labels"):
        build_bundle(
            model,
            {**meta, "labels": ["a", "b", "c"]},
            tmp_path / "x",
            ExportOptions(),
            parity_set=_set(mnist, 8),
        )
    assert not (tmp_path / "x").exists()
