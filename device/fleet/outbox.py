"""The event outbox: SQLite in WAL mode, written before publish, deleted on PUBACK, replayed in order.

    item_event()/alarm() ──append (one transaction: seq+1, row)──▶ events table ──next_after()──▶ paho publish
                                                                      ▲                           │ PUBACK
                                                                      └──────── ack(ids) ◀────────┘

The per-device `seq` is a counter in the same database, bumped in the same transaction as the row, so a seq
handed to the caller always has its event on disk and a restart never reuses one. Rows stay until the broker
acknowledges them, so a restart replays everything unacknowledged in id order (a subscriber may then see an
event twice, same seq and payload; it never misses one). The table is bounded by total payload size and by
age: the oldest events go first and each drop is counted (persisted), never silent.

Hand-written on sqlite3 rather than a queue library: none of the maintained ones (persist-queue, litequeue)
expose the seq-in-the-same-transaction and counted-drop bounds this contract needs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from device.errors import EdgesortError

log = logging.getLogger("edgesort.fleet.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COUNTERS = ("dropped_size", "dropped_age", "rejected")
WAL_LIMIT_BYTES = 4 * 2**20
BUSY_TIMEOUT_MS = 5000  # another connection (the command replay guard) may hold the write lock briefly


class OutboxError(EdgesortError):
    exit_code = 74  # EX_IOERR


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    topic: str
    payload: bytes
    seq: int
    created: float


class Outbox:
    def __init__(self, path: Path, *, max_bytes: int, max_age_s: float, fsync: bool = True) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._closed = False
        self.recovered_from: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the state directory {self.path.parent}: {exc.strerror}"
            ) from exc
        try:
            self._db = self._open(fsync)
        except sqlite3.DatabaseError as exc:
            # A torn or foreign file cannot be replayed; keep it for inspection and start a fresh stream
            # (the new stream id tells subscribers that seq restarts).
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is unreadable (%s); moved aside to %s", self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.recovered_from = aside
            self._db = self._open(fsync)
        self.stream = self._meta_init("stream", uuid.uuid4().hex[:16])
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    def _open(self, fsync: bool) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise OutboxError(
                f"{self.path}: SQLite refused WAL mode (got {mode}); is it on a network filesystem?"
            )
        # FULL: every commit reaches the disk before append() returns (survives power loss).
        # NORMAL: survives a process crash; the last commits may roll back on power loss.
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        # After a long outage the WAL may have grown with the backlog: cut it back at the next checkpoint.
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        db.executescript(_SCHEMA)
        db.execute("SELECT COUNT(*) FROM events").fetchone()  # reads a page: a corrupt file raises here
        return db

    # -- meta: small persisted counters (seq, session, drops) --------------------------------------

    def _meta_init(self, key: str, value: str) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            return str(self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def _get_int(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _add_int(self, key: str, n: int) -> int:
        value = self._get_int(key) + n
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))
        return value

    def meta_int(self, key: str) -> int:
        with self._lock:
            return self._get_int(key)

    def incr(self, key: str, n: int = 1) -> int:
        """Add n to a persisted counter and return its new value (used for the session counter)."""
        with self._lock, self._tx():
            return self._add_int(key, n)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            return None if row is None else str(row[0])

    # -- events ------------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _tx(self) -> Outbox._Tx:
        return Outbox._Tx(self._db)

    def append(self, topic: str, build: Callable[[int], bytes], *, now: float | None = None) -> int:
        """Assign the next seq, build the payload with it, and store it durably. Returns the seq."""
        created = time.time() if now is None else now
        if self._closed:
            raise OutboxError("the outbox is closed: the fleet reporter was stopped")
        with self._lock, self._tx():
            seq = self._get_int("seq") + 1
            payload = build(seq)
            if len(payload) > self.max_bytes:
                raise OutboxError(f"an event of {len(payload)} bytes is larger than the whole outbox bound")
            self._make_room(len(payload))
            self._db.execute(
                "INSERT INTO events(topic, payload, seq, created) VALUES (?, ?, ?, ?)",
                (topic, payload, seq, created),
            )
            self._add_int("seq", 1)
            self._count += 1
            self._bytes += len(payload)
            return seq

    def _make_room(self, incoming: int) -> None:
        dropped = 0
        while self._bytes + incoming > self.max_bytes and self._count:
            rows = self._db.execute("SELECT id, LENGTH(payload) FROM events ORDER BY id LIMIT 256").fetchall()
            for rid, size in rows:
                if self._bytes + incoming <= self.max_bytes:
                    break
                self._db.execute("DELETE FROM events WHERE id=?", (rid,))
                self._bytes -= int(size)
                self._count -= 1
                dropped += 1
        if dropped:
            total = self._add_int("dropped_size", dropped)
            log.warning(
                "outbox full (%.1f MB): dropped the %d oldest events (%d in all)",
                self.max_bytes / 2**20,
                dropped,
                total,
            )

    def next_after(self, after_id: int, limit: int) -> list[Row]:
        """Up to `limit` stored events with id > after_id, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, seq, created FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Row(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), float(r[4])) for r in rows]

    def rows(self, ids: list[int]) -> list[Row]:
        """The stored events among `ids`, oldest first (ids dropped by a bound are simply absent)."""
        out: list[Row] = []
        with self._lock:
            for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                out += [
                    Row(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), float(r[4]))
                    for r in self._db.execute(
                        f"SELECT id, topic, payload, seq, created FROM events WHERE id IN ({marks})", chunk
                    )
                ]
        return sorted(out, key=lambda r: r.id)

    def ack(self, ids: Iterable[int], *, rejected: int = 0) -> None:
        """Delete acknowledged events (and count those the broker refused for good)."""
        ids = list(ids)
        if not ids:
            return
        with self._lock, self._tx():
            for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                n, size = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                self._db.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
                self._count -= int(n)
                self._bytes -= int(size)
            if rejected:
                self._add_int("rejected", rejected)

    def expire(self, now: float | None = None) -> int:
        """Drop events older than the age bound; returns how many were dropped."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock, self._tx():
            n = self._db.execute("DELETE FROM events WHERE created < ?", (cutoff,)).rowcount
            if n:
                self._add_int("dropped_age", n)
                row = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events"
                ).fetchone()
                self._count, self._bytes = int(row[0]), int(row[1])
        if n:
            log.warning("outbox: dropped %d events older than %.1f h", n, self.max_age_s / 3600)
        return int(n)

    def stats(self, now: float | None = None) -> dict[str, int | float | None]:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM events").fetchone()[0]
            out: dict[str, int | float | None] = {
                "pending": self._count,
                "pending_bytes": self._bytes,
                "oldest_age_s": None if oldest is None else max(0.0, (now or time.time()) - float(oldest)),
                "last_seq": self._get_int("seq"),
            }
            for key in _COUNTERS:
                out[key] = self._get_int(key)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()
