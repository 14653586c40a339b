"""Signals and exit codes of the daemon.

- SIGTERM (systemctl stop) and SIGINT (Ctrl-C) set a stop event; the main loop leaves, puts the MCU in its
  safe state and returns ExitCode.OK. A second SIGINT raises KeyboardInterrupt (exit 130): an impatient
  terminal.
- SIGUSR2 is a fault-injection hook: it freezes the main thread inside the handler, wherever it was, until the
  next SIGUSR2 (or a stop signal). The watchdog pings stop, which is how the test suite (and a technician:
  `systemctl kill -s USR2 edgesort`) proves that a hung loop gets restarted.
- SIGUSR1 prints every thread's stack to stderr (the journal) without stopping anything; SIGABRT, which
  systemd sends on a watchdog timeout, does the same before the process dies (faulthandler).
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
from enum import IntEnum
from types import FrameType, TracebackType
from typing import Any

from device.errors import EdgesortError
from device.service.notify import Notifier

log = logging.getLogger("edgesort.service")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FREEZE_SIGNAL = signal.SIGUSR2
STACKS_SIGNAL = signal.SIGUSR1

# While frozen, the handler re-checks the stop event this often (a stop signal also wakes it at once).
_FREEZE_POLL_S = 1.0


def _caller(frame: FrameType | None) -> str:
    """file:line of the interrupted code, skipping the stdlib's threading.py (Event.wait) frames."""
    while frame is not None and frame.f_code.co_filename == threading.__file__:
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


class ExitCode(IntEnum):
    """Why the daemon ended (sysexits.h values, which systemd names in `systemctl status`)."""

    OK = 0  # stopped on request
    DATAERR = 65  # bad model bundle (malformed, altered, unsigned where a signature is required)
    UNAVAILABLE = 69  # an optional dependency is missing (tensorrt, onnxruntime, cv2, ...)
    SOFTWARE = 70  # internal error: a bug
    IOERR = 74  # I/O: the MCU link or the camera was lost
    CONFIG = 78  # invalid config or line geometry


def exit_code_for(exc: BaseException) -> int:
    """The exit code that says why `exc` ended the daemon."""
    if isinstance(exc, EdgesortError):
        try:
            return ExitCode(exc.exit_code)
        except ValueError:
            return exc.exit_code  # an error class with its own code keeps it
    if isinstance(exc, OSError):  # serial.SerialException and BridgeError are IOError subclasses
        return ExitCode.IOERR
    return ExitCode.SOFTWARE


class ServiceSignals:
    """`with ServiceSignals(notifier) as sig:` in the main thread, then loop `while not sig.stop.is_set()`."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier
        self.stop = threading.Event()
        self.stop_reason: str | None = None
        self._thaw = threading.Event()
        self._frozen = False
        self._previous: dict[int, Any] = {}

    @property
    def frozen(self) -> bool:
        return self._frozen

    def install(self) -> ServiceSignals:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ServiceSignals.install() must run in the main thread (where signals arrive)")
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_stop)
        self._previous[FREEZE_SIGNAL] = signal.signal(FREEZE_SIGNAL, self._on_freeze)
        faulthandler.enable(file=sys.stderr, all_threads=True)
        faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True, chain=False)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        faulthandler.unregister(STACKS_SIGNAL)

    def __enter__(self) -> ServiceSignals:
        return self.install()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.restore()

    def request_stop(self, reason: str) -> None:
        """Stop as a signal would (for a fatal condition found by the loop itself, e.g. the MCU link lost)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()
        self._thaw.set()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.info("%s: already stopping", name)
            return
        log.info("%s: stopping", name)
        self.request_stop(name)
        if self.notifier is not None:
            self.notifier.stopping(f"stopping ({name})")

    def _on_freeze(self, signum: int, frame: FrameType | None) -> None:
        if self._frozen:  # the second SIGUSR2 runs nested inside the first handler's wait below
            self._thaw.set()
            return
        if self.stop.is_set():
            return
        self._frozen = True
        self._thaw.clear()
        where = _caller(frame)
        log.warning("fault injection: SIGUSR2 froze the main thread at %s; SIGUSR2 again thaws it", where)
        if self.notifier is not None:
            self.notifier.status("main loop frozen by SIGUSR2 (fault injection)")
        try:
            while not self._thaw.wait(_FREEZE_POLL_S) and not self.stop.is_set():
                pass
        finally:
            self._frozen = False
        log.warning("fault injection: main thread thawed")
        if self.notifier is not None and not self.stop.is_set():
            self.notifier.status("main loop thawed (fault injection)")
