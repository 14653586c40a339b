"""`edgesort run` as systemd runs it: a fake NOTIFY_SOCKET, WATCHDOG_USEC, the digital twin, the demo model.

Checks what issue 9 asks of the service: READY=1 from the main process once the line is up, WATCHDOG=1 at
half the watchdog period and never later than it, no WATCHDOG=1 while the main loop is frozen on purpose
(SIGUSR2, device.service.signals), pings again after a thaw, and on SIGTERM: STOPPING=1, the MCU's
acknowledged safe state (STATUS_MCU_SAFE), exit code 0 within the unit's TimeoutStopSec, one log line per
event and no traceback.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sd_listener import Message, NotifyListener
from service_paths import REPO

from device.service import STATUS_MCU_SAFE, ExitCode

RUN_PY = REPO / "device" / "commands" / "run.py"
EDGESORT = REPO / ".venv" / "bin" / "edgesort"
DEMO_BUNDLE = REPO / "device" / "assets" / "demo_bundle"  # device.sorting.line.DEMO_BUNDLE ('bundle: demo')
WATCHDOG_USEC = 3_000_000  # pings every 1.5 s
START_TIMEOUT_S = 180  # a cold start on a shared 2-core CI machine (imports, model, twin, latency check)
STOP_TIMEOUT_S = 30  # TimeoutStopSec= in systemd/edgesort.service
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")

pytestmark = pytest.mark.skipif(not RUN_PY.exists(), reason="device/commands/run.py is not written yet")


def _demo_bundle_or_skip() -> None:
    if not (DEMO_BUNDLE / "manifest.json").is_file():
        reason = f"the demo bundle is not built yet ({DEMO_BUNDLE})"
        if os.environ.get("EDGESORT_REQUIRE_ALL") == "1":
            pytest.fail(reason + " and EDGESORT_REQUIRE_ALL=1")
        pytest.skip(reason)


@pytest.fixture
def daemon(tmp_path: Path, notify_listener: NotifyListener) -> Iterator[subprocess.Popen[str]]:
    _demo_bundle_or_skip()
    config = tmp_path / "config.yaml"
    config.write_text(
        "device: {id: service-test, site: ci}\n"
        "cameras: [{name: cam0, uri: 'sim://'}]\n"
        "model: {bundle: demo, backend: onnxruntime, threads: 1}\n"
        "bridge: {port: sim}\n"
        "mqtt: {url: null}\n"
        f"paths: {{state_dir: '{tmp_path / 'state'}'}}\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=notify_listener.address, WATCHDOG_USEC=str(WATCHDOG_USEC),
               OMP_NUM_THREADS="1")
    env.pop("WATCHDOG_PID", None)
    env.pop("JOURNAL_STREAM", None)
    exe = str(EDGESORT) if EDGESORT.exists() else "edgesort"
    # Output into a file, not a pipe: a pipe nobody drains fills up and blocks the daemon's logging.
    with open(tmp_path / "daemon.log", "w") as log:
        proc = subprocess.Popen([exe, "run", "--config", str(config)], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def _is(field: str) -> Callable[[Message], bool]:
    return lambda m: field in m


def _status(text: str) -> Callable[[Message], bool]:
    return lambda m: text in m.fields.get("STATUS", "")


def _gaps(pings: list[Message]) -> list[float]:
    return [b.ts - a.ts for a, b in itertools.pairwise(pings)]


def _output(proc: subprocess.Popen[str]) -> str:
    return (Path(str(proc.args[-1])).parent / "daemon.log").read_text()


def _fail_with_output(proc: subprocess.Popen[str], what: str) -> None:
    if proc.poll() is not None:
        pytest.fail(f"{what}: the daemon exited with {proc.returncode}:\n{_output(proc)[-4000:]}")


def _expect(
    proc: subprocess.Popen[str],
    listener: NotifyListener,
    match: Callable[[Message], bool],
    what: str,
    timeout: float,
    after: int = 0,
) -> tuple[int, Message]:
    """Wait for a message, but fail at once (with the daemon's output) if the daemon exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return listener.wait_for(match, timeout=1.0, after=after)
        except AssertionError:
            _fail_with_output(proc, f"waiting for {what}")
            if time.monotonic() > deadline:
                raise


def test_daemon_under_systemd_notify(daemon: subprocess.Popen[str], notify_listener: NotifyListener) -> None:
    _, ready = _expect(daemon, notify_listener, _is("READY=1"), "READY=1", START_TIMEOUT_S)
    assert ready.pid == daemon.pid  # NotifyAccess=main: systemd ignores other processes

    # The cadence: at half the period, never as late as the period (kernel receive timestamps).
    first = len(notify_listener.messages)
    pings = notify_listener.wait_count(_is("WATCHDOG=1"), 4, timeout=60)
    _fail_with_output(daemon, "while waiting for WATCHDOG=1")
    assert len(pings) >= 4 and all(p.pid == daemon.pid for p in pings)
    half = WATCHDOG_USEC / 2e6
    assert all(0.8 * half <= g < 2 * half for g in _gaps(pings)), _gaps(pings)

    # Frozen main loop: the pings stop for longer than systemd's timeout.
    daemon.send_signal(signal.SIGUSR2)
    j, _ = _expect(daemon, notify_listener, _status("frozen by SIGUSR2"), "the freeze", 10, after=first)
    with pytest.raises(AssertionError):
        notify_listener.wait_for(_is("WATCHDOG=1"), timeout=1.5 * WATCHDOG_USEC / 1e6, after=j)
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGUSR2)
    k, _ = _expect(daemon, notify_listener, _status("thawed"), "the thaw", 10, after=j)
    _expect(daemon, notify_listener, _is("WATCHDOG=1"), "pings after the thaw", 2 * WATCHDOG_USEC / 1e6,
            after=k)

    # A clean stop: STOPPING=1, then the MCU acknowledges its safe state, then exit 0.
    daemon.send_signal(signal.SIGTERM)
    s, stopping = notify_listener.wait_for(_is("STOPPING=1"), timeout=STOP_TIMEOUT_S, after=k)
    assert stopping.pid == daemon.pid
    notify_listener.wait_for(_status(STATUS_MCU_SAFE), timeout=STOP_TIMEOUT_S, after=s)
    assert daemon.wait(STOP_TIMEOUT_S) == ExitCode.OK
    output = _output(daemon)
    assert "Traceback" not in output
    odd = [line for line in output.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert odd == [], "not one log line per event with its level:\n" + "\n".join(odd[:20])
    assert "SIGTERM" in output
