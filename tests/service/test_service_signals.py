"""Signals, the SIGUSR2 freeze and exit codes: a real process (service_loop.py) under a fake NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sd_listener import Message, NotifyListener

from device.errors import BundleError, ConfigError, EdgesortError, MissingDependencyError
from device.service import STATUS_MCU_SAFE, ExitCode, exit_code_for

HERE = Path(__file__).parent
REPO = HERE.parent.parent
WATCHDOG_USEC = 2_000_000  # pings every 1 s
STOP_TIMEOUT_S = 20


def _spawn(listener: NotifyListener, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    env["PYTHONPATH"] = str(REPO)
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, str(HERE / "service_loop.py"), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def loop(notify_listener: NotifyListener) -> Iterator[subprocess.Popen[str]]:
    proc = _spawn(notify_listener)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=STOP_TIMEOUT_S)


def _is(field: str) -> Callable[[Message], bool]:
    return lambda m: field in m


def _status(text: str) -> Callable[[Message], bool]:
    return lambda m: text in m.fields.get("STATUS", "")


def _gaps(pings: list[Message]) -> list[float]:
    return [b.ts - a.ts for a, b in itertools.pairwise(pings)]


def test_ready_watchdog_cadence_and_clean_stop(
    notify_listener: NotifyListener, loop: subprocess.Popen[str]
) -> None:
    i, ready = notify_listener.wait_for(_is("READY=1"), timeout=30)
    assert ready.pid == loop.pid  # systemd's NotifyAccess=main accepts only the main process
    pings = notify_listener.wait_count(_is("WATCHDOG=1"), 4, timeout=30)
    assert len(pings) >= 4
    assert all(p.pid == loop.pid for p in pings)
    half = WATCHDOG_USEC / 2e6
    # Never later than systemd's timeout, and rate-limited to half of it (kernel timestamps, small slack).
    assert all(0.8 * half <= g < 2 * half for g in _gaps(pings)), _gaps(pings)

    loop.send_signal(signal.SIGTERM)
    j, _ = notify_listener.wait_for(_is("STOPPING=1"), timeout=STOP_TIMEOUT_S, after=i)
    notify_listener.wait_for(_status(STATUS_MCU_SAFE), timeout=STOP_TIMEOUT_S, after=j)
    assert loop.wait(STOP_TIMEOUT_S) == ExitCode.OK
    stderr = loop.communicate()[1]
    assert "SIGTERM: stopping" in stderr and "Traceback" not in stderr


# Failed once in 20-odd runs, in a CI-like run on a heavily loaded machine: the second SIGUSR2 did not thaw
# the loop within 10 s. Not reproduced since (alone, or beside four busy processes); rerun while it is open.
@pytest.mark.flaky(reruns=2)
def test_sigusr2_freezes_the_loop_and_the_pings_stop(
    notify_listener: NotifyListener, loop: subprocess.Popen[str]
) -> None:
    notify_listener.wait_count(_is("WATCHDOG=1"), 2, timeout=30)
    loop.send_signal(signal.SIGUSR2)
    i, frozen = notify_listener.wait_for(_status("frozen by SIGUSR2"), timeout=10)
    # Longer than systemd's timeout: a real manager would have killed it by now.
    with pytest.raises(AssertionError):
        notify_listener.wait_for(_is("WATCHDOG=1"), timeout=1.5 * WATCHDOG_USEC / 1e6, after=i)
    assert loop.poll() is None

    loop.send_signal(signal.SIGUSR2)
    j, _ = notify_listener.wait_for(_status("thawed"), timeout=10, after=i)
    notify_listener.wait_for(_is("WATCHDOG=1"), timeout=10, after=j)  # pings resume

    loop.send_signal(signal.SIGUSR2)  # frozen again: a stop signal must still end it cleanly
    k, _ = notify_listener.wait_for(_status("frozen by SIGUSR2"), timeout=10, after=j)
    loop.send_signal(signal.SIGTERM)
    notify_listener.wait_for(_is("STOPPING=1"), timeout=STOP_TIMEOUT_S, after=k)
    assert loop.wait(STOP_TIMEOUT_S) == ExitCode.OK
    assert frozen.pid == loop.pid


def test_sigusr1_dumps_stacks_and_keeps_running(
    notify_listener: NotifyListener, loop: subprocess.Popen[str]
) -> None:
    notify_listener.wait_for(_is("READY=1"), timeout=30)
    loop.send_signal(signal.SIGUSR1)
    n = len([m for m in notify_listener.messages if "WATCHDOG=1" in m])
    notify_listener.wait_count(_is("WATCHDOG=1"), n + 2, timeout=30)  # still pinging: still alive
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(STOP_TIMEOUT_S) == ExitCode.OK
    stderr = loop.communicate()[1]
    assert 'File "' in stderr and "service_loop.py" in stderr  # faulthandler's stack dump


def test_a_lost_link_exits_with_ioerr(notify_listener: NotifyListener) -> None:
    proc = _spawn(notify_listener, "--fail-after", "5")
    try:
        assert proc.wait(STOP_TIMEOUT_S) == ExitCode.IOERR == 74
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    notify_listener.wait_for(_is("STOPPING=1"), timeout=5)
    assert "ERROR edgesort.run: stopping: [Errno 5] MCU link lost" in stderr


class _CaptureError(EdgesortError):
    exit_code = 74


class _OddError(EdgesortError):
    exit_code = 3


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 78),
        (BundleError("x"), 65),
        (MissingDependencyError("tensorrt", "the TensorRT backend"), 69),
        (OSError(5, "gone"), 74),
        (_CaptureError("camera gone"), 74),
        (RuntimeError("bug"), 70),
        (_OddError("x"), 3),
    ],
)
def test_exit_codes_say_why(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_install_outside_the_main_thread_is_refused() -> None:
    import threading

    from device.service import ServiceSignals

    errors: list[BaseException] = []

    def run() -> None:
        try:
            ServiceSignals().install()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0])
