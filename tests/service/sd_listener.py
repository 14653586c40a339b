"""A stand-in for systemd's notify socket: a real AF_UNIX datagram socket that records what the daemon says.

Each message keeps the sender's pid (SCM_CREDENTIALS: systemd's NotifyAccess=main ignores other processes) and
the kernel's receive timestamp (SO_TIMESTAMPNS), so watchdog cadence is measured where systemd would see it,
not when a busy test thread got round to reading.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

SO_TIMESTAMPNS = 35  # asm-generic/socket.h (x86_64, aarch64); Python does not export it
_UCRED = struct.Struct("3i")
_TIMESPEC = struct.Struct("2q")


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    pid: int | None
    ts: float  # kernel receive time, CLOCK_REALTIME seconds

    def __contains__(self, item: str) -> bool:
        key, _, value = item.partition("=")
        return self.fields.get(key) == value if value else key in self.fields


class NotifyListener:
    def __init__(self, address: str) -> None:
        self.address = address  # what goes into NOTIFY_SOCKET
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if sys.platform == "linux":
            self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.settimeout(0.2)  # the reader re-checks `closed` this often
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._closed = False
        # Drain continuously: a unix datagram queue holds only net.unix.max_dgram_qlen (10) messages, after
        # which the daemon's sends would block.
        self._reader = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        space = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(_TIMESPEC.size)
        while not self._closed:
            try:
                data, ancdata, _, _ = self._sock.recvmsg(4096, space)
            except TimeoutError:
                continue
            except OSError:
                return
            pid, ts = None, time.time()
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
                elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    ts = sec + nsec / 1e9
            fields = dict(line.partition("=")[::2] for line in data.decode().split("\n") if line)
            with self._cond:
                self._messages.append(Message(fields, pid, ts))
                self._cond.notify_all()

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, match: Callable[[Message], bool], timeout: float, *, after: int = 0
    ) -> tuple[int, Message]:
        """The first message at index >= `after` that matches, waiting up to `timeout` s for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(after, len(self._messages)):
                    if match(self._messages[i]):
                        return i, self._messages[i]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [m.fields for m in self._messages[after:]][-20:]
                    raise AssertionError(f"no matching notify message within {timeout} s; got {seen}")
                self._cond.wait(left)

    def wait_count(self, match: Callable[[Message], bool], count: int, timeout: float) -> list[Message]:
        """Wait until `count` messages match; return all matching ones."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if match(m)]
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._reader.join(timeout=2)
        self._sock.close()
