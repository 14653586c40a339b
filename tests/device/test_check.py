import subprocess
import sys

import pytest


def edgesort(*args: str) -> subprocess.CompletedProcess:
    # A subprocess, as a technician runs it (and device/__init__ is not shadowed by tests/device on sys.path).
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_check_config_prints_a_summary_of_a_valid_file(tmp_path):
    f = tmp_path / "device.yaml"
    f.write_text(
        "device:\n  id: line-3\n  site: farm\ncameras:\n  - name: top\n    uri: v4l2:///dev/video0\n"
    )
    r = edgesort("check", "config", str(f))
    assert r.returncode == 0, r.stderr
    assert f"{f}: valid" in r.stdout and "farm/line-3" in r.stdout and "top: v4l2:///dev/video0" in r.stdout


def test_check_config_refuses_an_unknown_key_with_its_line(tmp_path):
    f = tmp_path / "device.yaml"
    f.write_text("device:\n  id: a\nmodel:\n  backend: onnxruntime\n  thread: 2\n")
    r = edgesort("check", "config", str(f))
    assert r.returncode == 78
    assert f"{f}:5: model.thread: unknown key" in r.stderr and "Traceback" not in r.stderr


def test_check_config_on_a_missing_file_is_one_sentence(tmp_path):
    r = edgesort("check", "config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 78 and "cannot read config" in r.stderr and "Traceback" not in r.stderr


def test_check_camera_reads_frames_from_the_configured_source(tmp_path):
    from runtime_fixtures import colour_images

    colour_images(tmp_path / "imgs", 5, size=(48, 64))
    f = tmp_path / "device.yaml"
    f.write_text(
        f"cameras:\n  - name: top\n    uri: file://{tmp_path / 'imgs'}?loop=1\n    fps: 20\n"
        "    width: 64\n    height: 48\n"
    )
    r = edgesort(
        "check", "camera", "--config", str(f), "--seconds", "1", "--save", str(tmp_path / "last.png")
    )
    assert r.returncode == 0, r.stderr
    assert "camera top:" in r.stdout and "size     64x48" in r.stdout and "fps" in r.stdout
    assert (tmp_path / "last.png").is_file()


def test_check_camera_on_a_missing_device_is_one_sentence(tmp_path):
    f = tmp_path / "device.yaml"
    f.write_text("cameras:\n  - uri: v4l2:///dev/video77\n")
    r = edgesort("check", "camera", "--config", str(f), "--seconds", "1")
    assert r.returncode == 74 and "no such device" in r.stderr and "Traceback" not in r.stderr


def test_check_model_loads_the_bundle_and_prints_latency(tmp_path):
    pytest.importorskip("onnxruntime")
    from runtime_fixtures import colour_images, tiny_bundle

    b = tiny_bundle(tmp_path)
    (img,) = colour_images(tmp_path / "imgs", 1)
    f = tmp_path / "device.yaml"
    f.write_text(
        f"model:\n  bundle: {b.root}\n  backend: onnxruntime\n  threads: 1\npaths:\n"
        f"  state_dir: {tmp_path / 'state'}\n"
    )
    r = edgesort("check", "model", "--config", str(f), "--seconds", "0.5", "--image", str(img))
    assert r.returncode == 0, r.stderr
    assert "model tiny@1/fp32" in r.stdout and "onnxruntime  present" in r.stdout
    assert "ms median" in r.stdout and "result" in r.stdout


def test_check_bridge_talks_to_the_mcu_simulator(tmp_path):
    pytest.importorskip("firmware_bridge.mcu_sim")
    f = tmp_path / "device.yaml"
    f.write_text("bridge:\n  port: sim\n")
    r = edgesort("check", "bridge", "--config", str(f), "--seconds", "0.5")
    assert r.returncode == 0, r.stderr
    assert "ping" in r.stdout and "counters" in r.stdout
