import subprocess
import sys


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
