"""device/engines.py: cache key, trtexec line, calibration header, and the missing-TensorRT sentence.

Building an engine needs TensorRT and an NVIDIA GPU; that test runs on a Jetson and is skipped elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import normalize

from device.bundle import Bundle, verify_bundle
from device.cli import main
from device.engines import (
    DeviceInfo,
    EngineError,
    check_buildable,
    engine_key,
    restamp_cache,
    trt_version_tag,
    trtexec_command,
)
from export.build import ExportOptions, ImageSet, build_bundle


def _has_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


@pytest.fixture(scope="module")
def bundles(tiny_trained, mnist, tmp_path_factory) -> dict[str, Bundle]:
    model, meta = tiny_trained
    root = tmp_path_factory.mktemp("engines")
    parity = ImageSet(normalize(mnist["test_x"][:16]), mnist["test_y"][:16], "mnist:val[16]")
    calib = ImageSet(normalize(mnist["train_x"][:64]), mnist["train_y"][:64], "mnist:train[64]")
    held = ImageSet(normalize(mnist["test_x"][:300]), mnist["test_y"][:300], "mnist:val[300]")
    build_bundle(model, meta, root / "fp32", ExportOptions(), parity_set=parity, calib_set=calib)
    for name, scheme in (("int8", "onnxruntime"), ("int8-trt", "tensorrt")):
        opts = ExportOptions(precision="int8", int8_scheme=scheme)
        build_bundle(model, meta, root / name, opts, parity_set=parity, calib_set=calib, heldout_set=held)
    build_bundle(model, meta, root / "fp32-nocalib", ExportOptions(), parity_set=parity)
    return {k: verify_bundle(root / k) for k in ("fp32", "int8", "int8-trt", "fp32-nocalib")}


ORIN = DeviceInfo("Orin (nvgpu)", "8.7", "NVIDIA Jetson Orin Nano Developer Kit")


def test_key_changes_with_everything_that_breaks_an_engine(bundles) -> None:
    b = bundles["fp32"]
    k = engine_key(b, precision="int8", dla_core=None, trt_version="8.6.2", device=ORIN)
    assert k.model_sha256 == b.manifest.files["model.onnx"].sha256
    assert k.calib_sha256 == b.manifest.files["calib.cache"].sha256  # implicit INT8 from the cache
    assert "sm87" in k.device and "Orin Nano" in k.device
    same = engine_key(b, precision="int8", dla_core=None, trt_version="8.6.2", device=ORIN)
    assert same.differences(k.as_dict()) == []
    newer = engine_key(b, precision="int8", dla_core=None, trt_version="10.3.0", device=ORIN)
    assert newer.differences(k.as_dict()) == ["tensorrt '8.6.2' -> '10.3.0'"]
    other_gpu = engine_key(
        b,
        precision="int8",
        dla_core=None,
        trt_version="8.6.2",
        device=DeviceInfo("NVIDIA GeForce RTX 3060", "8.6"),
    )
    assert [d.split(" ")[0] for d in other_gpu.differences(k.as_dict())] == ["device"]
    dla = engine_key(b, precision="int8", dla_core=0, trt_version="8.6.2", device=ORIN)
    assert dla.filename("lenet") != k.filename("lenet") and "dla0" in dla.filename("lenet")
    # an INT8 (Q/DQ) bundle takes its scales from the graph, so no calibration cache enters the key
    q = engine_key(bundles["int8"], precision="int8", dla_core=None, trt_version="8.6.2", device=ORIN)
    assert q.calib_sha256 == "" and q.model_sha256 != k.model_sha256


def test_what_cannot_be_built_is_refused_without_tensorrt(bundles) -> None:
    check_buildable(bundles["fp32"], precision="int8", dla_core=0)  # calib.cache: implicit INT8, also on DLA
    check_buildable(bundles["int8-trt"], precision="int8", dla_core=None)
    with pytest.raises(EngineError, match="uint8 activations"):
        check_buildable(bundles["int8"], precision="int8", dla_core=None)
    with pytest.raises(EngineError, match=r"needs calib\.cache"):
        check_buildable(bundles["fp32-nocalib"], precision="int8", dla_core=None)
    with pytest.raises(EngineError, match="fp16 needs a float bundle"):
        check_buildable(bundles["int8-trt"], precision="fp16", dla_core=None)
    with pytest.raises(EngineError, match="DLA runs fp16 or int8 only"):
        check_buildable(bundles["fp32"], precision="fp32", dla_core=0)
    with pytest.raises(EngineError, match="unknown precision"):
        check_buildable(bundles["fp32"], precision="int4", dla_core=None)


def test_trtexec_command(bundles) -> None:
    fp32, int8 = bundles["fp32"], bundles["int8-trt"]
    cmd = trtexec_command(fp32, precision="int8", dla_core=None, engine_path=Path("/e/x.engine"))
    assert cmd.startswith("trtexec --onnx=") and "--int8" in cmd and "--fp16" in cmd
    assert f"--calib={fp32.root / 'calib.cache'}" in cmd
    assert "--minShapes=images:1x1x28x28" in cmd and "--maxShapes=images:8x1x28x28" in cmd
    cmd = trtexec_command(int8, precision="int8", dla_core=None, engine_path=None)
    assert "--int8" in cmd and "--calib" not in cmd
    cmd = trtexec_command(fp32, precision="fp16", dla_core=1, engine_path=None)
    assert "--useDLACore=1" in cmd and "--allowGPUFallback" in cmd and "--int8" not in cmd
    assert "--minShapes=images:8x1x28x28" in cmd  # DLA: static shapes


def test_calibration_header_is_restamped_for_the_running_tensorrt() -> None:
    assert trt_version_tag("8.6.1") == "8601" and trt_version_tag("10.3.0") == "100300"
    assert trt_version_tag("8.5.2.2") == "8502"
    cache = b"TRT-8601-EntropyCalibration2\nimages: 3c010a14\n"
    assert restamp_cache(cache, "10.3.0") == b"TRT-100300-EntropyCalibration2\nimages: 3c010a14\n"
    with pytest.raises(EngineError, match="not a TensorRT calibration cache"):
        restamp_cache(b"images 0.5\n", "8.6.1")


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed: the missing-TensorRT message cannot show")
def test_export_engine_without_tensorrt_is_one_sentence(bundles, tmp_path: Path, capsys) -> None:
    code = main(["export", "engine", str(bundles["fp32"].root), "--precision", "int8", "--cache", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 69
    assert err.strip().count("\n") == 0 and "needs the Python module 'tensorrt', which is not installed" in err
    assert "trtexec --onnx=" in out and "--calib=" in out  # the equivalent command is printed first
    assert not any(tmp_path.iterdir())


@pytest.mark.tensorrt
@pytest.mark.skipif(not _has_tensorrt(), reason="TensorRT is not installed (it comes with JetPack)")
def test_build_and_reuse_engine(bundles, tmp_path: Path) -> None:
    from device.engines import ensure_engine

    first = ensure_engine(bundles["fp32"], precision="fp16", dla_core=None, cache_dir=tmp_path)
    assert first.rebuilt and first.path.stat().st_size > 0
    again = ensure_engine(bundles["fp32"], precision="fp16", dla_core=None, cache_dir=tmp_path)
    assert not again.rebuilt and again.reason == "cached" and again.path == first.path
    np.testing.assert_equal(first.path.read_bytes() == again.path.read_bytes(), True)


def test_export_engine_refuses_an_onnxruntime_int8_bundle_before_anything(bundles, tmp_path: Path, capsys) -> None:
    code = main(["export", "engine", str(bundles["int8"].root), "--precision", "int8", "--cache", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 69 and "--int8-scheme tensorrt" in err and out == ""
