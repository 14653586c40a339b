"""Log lines for journald: '<N>' priority prefixes, one entry per event, only when stderr is the journal."""

from __future__ import annotations

import logging
import os
import socket
import sys

from device.service.journal import JournalFormatter, formatter_for, stream_is_journal


def _record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad frame")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("edgesort.bridge", level, __file__, 1, msg, None, exc_info)


def test_priorities_and_one_line_per_event() -> None:
    f = JournalFormatter()
    assert f.format(_record(logging.INFO, "ready")) == "<6>INFO edgesort.bridge: ready"
    assert f.format(_record(logging.WARNING, "relinked")).startswith("<4>WARNING ")
    assert f.format(_record(logging.ERROR, "lost")).startswith("<3>ERROR ")
    assert f.format(_record(logging.DEBUG, "x")).startswith("<7>")
    line = f.format(_record(logging.ERROR, "decoder failed\nsecond line", exc=True))
    assert "\n" not in line and "Traceback" in line and "ValueError: bad frame" in line


def test_journal_stream_is_recognised_by_device_and_inode() -> None:
    a, b = socket.socketpair()  # journald hands the service a stream socket as stdout/stderr
    try:
        stream = os.fdopen(a.detach(), "w")
        st = os.fstat(stream.fileno())
        assert stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stream_is_journal(stream, {})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        stream.close()
    finally:
        b.close()


def test_formatter_for_a_terminal_is_plain() -> None:
    f = formatter_for(sys.stderr)  # pytest's stderr is not the journal
    assert not isinstance(f, JournalFormatter)
    assert f.format(_record(logging.INFO, "ready")) == "INFO edgesort.bridge: ready"
