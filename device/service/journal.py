"""Log lines that journald understands: one entry per event, with its priority.

Under systemd, stderr is a stream into journald ($JOURNAL_STREAM names it). journald reads a leading '<N>'
(sd-daemon(3) priority prefix) as the entry's level, so `journalctl -p warning -u edgesort` works, and every
line is its own entry: a traceback is folded into the event's line instead of becoming twenty entries.
No log files: journald rotates, rate-limits and ships them.
"""

from __future__ import annotations

import logging
import os
from typing import TextIO

# syslog priorities (sd-daemon.h SD_ERR ... SD_DEBUG)
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

FORMAT = "%(levelname)s %(name)s: %(message)s"


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when `stream` is the journald stream systemd connected ($JOURNAL_STREAM = 'device:inode')."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class JournalFormatter(logging.Formatter):
    """'<4>WARNING edgesort.bridge: ...' with the exception folded into the same line."""

    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{prio}>" + " | ".join(line for line in text.splitlines() if line.strip())


def formatter_for(stream: TextIO) -> logging.Formatter:
    """The formatter the command line should put on its stderr handler."""
    return JournalFormatter() if stream_is_journal(stream) else logging.Formatter(FORMAT)
