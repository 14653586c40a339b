"""sd_notify(3) over $NOTIFY_SOCKET: READY, STATUS, STOPPING, EXTEND_TIMEOUT_USEC and WATCHDOG messages.

Hand-written instead of depending on libsystemd (a C library) or a PyPI wrapper: the protocol is one
datagram of newline-separated KEY=VALUE fields sent to an AF_UNIX socket whose address systemd puts in
$NOTIFY_SOCKET ('@name' is the abstract namespace). Without the variable every call is a no-op, so the daemon
runs the same from a terminal. A failed send is logged once and never raises: the service manager going away
must not take the sorting line down with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping

log = logging.getLogger("edgesort.service")

# A stuck or gone service manager must not hang the main loop: a notify send gives up after this long.
SEND_TIMEOUT_S = 1.0

ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


def _socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as a Python AF_UNIX address, or None if it names a transport we do not speak."""
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. 'vsock:CID:PORT' (systemd >= 253, for VMs): not used on a Jetson


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    """WATCHDOG_USEC if meant for this process (WATCHDOG_PID unset or ours), as sd_watchdog_enabled()."""
    raw = environ.get(ENV_WATCHDOG_USEC)
    if not raw:
        return None
    pid = environ.get(ENV_WATCHDOG_PID)
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("ignoring %s=%r: not a process id", ENV_WATCHDOG_PID, pid)
            return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a whole number of microseconds", ENV_WATCHDOG_USEC, raw)
        return None
    return usec if usec > 0 else None


class Notifier:
    """Talks to the service manager. `Notifier.from_env()` is what the daemon uses."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address  # as found in $NOTIFY_SOCKET ('@name' or '/path'), None = disabled
        self._sockaddr = _socket_address(address) if address else None
        if address and self._sockaddr is None:
            log.warning("NOTIFY_SOCKET=%s is not a unix socket address; notifications are off", address)
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        # Re-entrant: a signal handler (SIGTERM, SIGUSR2) may notify while the main thread it interrupted is
        # inside notify() holding this lock; a plain Lock would deadlock the process there.
        self._lock = threading.RLock()
        self._failed_once = False
        self._stopping_sent = False
        self.sent = 0  # datagrams delivered, for status pages and tests

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """Read $NOTIFY_SOCKET / $WATCHDOG_USEC / $WATCHDOG_PID; with `unset` remove them so that children
        (simavr, helper tools) do not inherit them and talk to systemd in our name (as sd_notify's
        unset_environment)."""
        env = os.environ if environ is None else environ
        notifier = cls(env.get(ENV_NOTIFY_SOCKET) or None, watchdog_usec=_watchdog_usec(env))
        if unset:
            for key in (ENV_NOTIFY_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._sockaddr is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of KEY=VALUE fields. True when the service manager's socket took it."""
        if self._sockaddr is None or not fields:
            return False
        payload = "\n".join(fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self._sockaddr)
            except OSError as exc:
                if not self._failed_once:  # once: a gone manager would otherwise log at every watchdog tick
                    log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                    self._failed_once = True
                return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup is complete: camera, model and MCU link are up (Type=notify leaves 'activating')."""
        return self.notify("READY=1", *([_status_field(status)] if status else []))

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status edgesort`."""
        return self.notify(_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun. Sent once; later calls only update the status line."""
        fields = [_status_field(status)] if status else []
        if self._stopping_sent:
            return self.notify(*fields) if fields else False
        self._stopping_sent = True
        return self.notify("STOPPING=1", *fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the current start/stop timeout fires (must be repeated in time)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")

    def watchdog(self) -> bool:
        """Keep-alive. Only `ProgressWatchdog.tick` in the main loop should call this."""
        return self.notify("WATCHDOG=1")

    def watchdog_period(self) -> float | None:
        """The watchdog timeout in seconds (WatchdogSec=), or None when no watchdog is expected from us."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    @contextlib.contextmanager
    def extending(self, what: str, *, step_s: float = 60.0, limit_s: float = 3600.0) -> Iterator[None]:
        """Keep extending the start timeout while a long step (a TensorRT engine build) runs in this thread.

        A helper thread sends EXTEND_TIMEOUT_USEC=step every step/2 (so one late wake-up never lets it lapse)
        and STATUS with the elapsed time. It gives up after `limit_s`, so a build that hangs still ends in
        TimeoutStartSec instead of extending for ever.
        """
        if not self.enabled:
            yield
            return
        done = threading.Event()
        t0 = time.monotonic()

        def keep_extending() -> None:
            while not done.is_set():
                elapsed = time.monotonic() - t0
                if elapsed >= limit_s:
                    log.warning("%s: still running after %.0f s; no longer extending the start timeout",
                                what, elapsed)
                    return
                self.extend_timeout(step_s)
                self.status(f"{what} ({elapsed:.0f} s so far)")
                done.wait(step_s / 2)

        helper = threading.Thread(target=keep_extending, name="notify-extend", daemon=True)
        helper.start()
        try:
            yield
        finally:
            done.set()
            helper.join()

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _status_field(text: str) -> str:
    # A newline would start a new KEY=VALUE field: a status is one line.
    return "STATUS=" + " ".join(text.split())
