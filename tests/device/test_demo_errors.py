"""Bad input to the demo and the daemon: one clear sentence and a non-zero exit; a broker that is down loses
nothing (the events wait in the outbox)."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys

from device.sorting.line import DEMO_BUNDLE


def edgesort(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_sentence(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("edgesort ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_bundle(tmp_path):
    r = edgesort("demo", "--seconds", "1", "--no-live", "--bundle", str(tmp_path / "nope"),
                 "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 65
    assert "bundle not found" in one_sentence(r.stderr)


def test_bundle_with_a_flipped_byte(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    r = edgesort("demo", "--seconds", "1", "--no-live", "--bundle", str(bundle), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 65
    assert "model.onnx does not match its sha256" in one_sentence(r.stderr)


def test_invalid_config_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sorting:\n  confidence_floor: 2\n")
    r = edgesort("demo", "--seconds", "1", "--no-live", "--config", str(cfg), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 78
    assert "c.yaml:2: sorting.confidence_floor" in one_sentence(r.stderr)


def test_broker_down_keeps_every_event_in_the_outbox(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "state"
    report = tmp_path / "r.json"
    r = edgesort("demo", "--seconds", "8", "--no-live", "--mqtt", f"mqtt://127.0.0.1:{port}", "--json", str(report),
                 "--state-dir", str(state))
    assert r.returncode == 0, r.stderr[-2000:]
    events = json.loads(report.read_text())["item_events"]
    assert events > 0
    with sqlite3.connect(state / "outbox.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert stored >= events  # item events (and any alarms) wait for the broker; none was dropped
