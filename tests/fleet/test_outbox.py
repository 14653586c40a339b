"""The outbox on its own: seq in the same transaction as the row, order, acks, bounds with counted drops."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from device.fleet.outbox import Outbox, OutboxError


def _payload(seq: int, size: int = 10) -> bytes:
    return json.dumps({"seq": seq, "pad": "x" * size}).encode()


def test_seq_is_persisted_with_the_row_and_rows_come_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, max_bytes=10**6, max_age_s=3600)
    seqs = [box.append("t", _payload) for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    stream = box.stream
    rows = box.next_after(0, 100)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [json.loads(r.payload)["seq"] for r in rows] == [1, 2, 3, 4, 5]
    box.ack([rows[0].id, rows[2].id])
    box.close()

    again = Outbox(path, max_bytes=10**6, max_age_s=3600)
    assert again.stream == stream
    assert [r.seq for r in again.next_after(0, 100)] == [2, 4, 5]  # unacknowledged rows survive, in order
    assert again.append("t", _payload) == 6  # a restart never reuses a seq, even after acks emptied rows
    assert again.stats()["pending"] == 4
    again.close()


def test_a_failed_build_rolls_back_and_does_not_consume_a_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=10**6, max_age_s=3600)

    def bad(seq: int) -> bytes:
        raise ValueError("invalid event")

    with pytest.raises(ValueError):
        box.append("t", bad)
    assert box.append("t", _payload) == 1
    assert box.stats()["pending"] == 1


def test_size_bound_drops_oldest_first_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    one = len(_payload(99, 100))  # every seq kept below has two digits
    box = Outbox(path, max_bytes=10 * one, max_age_s=3600)
    for _ in range(25):
        box.append("t", lambda s: _payload(s, 100))
    st = box.stats()
    assert st["pending"] == 10
    assert st["dropped_size"] == 15
    assert st["pending_bytes"] == 10 * one
    assert [r.seq for r in box.next_after(0, 100)] == list(range(16, 26))
    box.close()
    assert Outbox(path, max_bytes=10**6, max_age_s=3600).stats()["dropped_size"] == 15  # the count persists


def test_age_bound_drops_old_events_and_counts_them(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=10**6, max_age_s=60)
    box.append("t", _payload, now=1000.0)
    box.append("t", _payload, now=1030.0)
    box.append("t", _payload, now=1100.0)
    assert box.expire(now=1095.0) == 2
    st = box.stats(now=1100.0)
    assert st["dropped_age"] == 2 and st["pending"] == 1
    assert [r.seq for r in box.next_after(0, 10)] == [3]


def test_an_event_larger_than_the_bound_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=50, max_age_s=60)
    with pytest.raises(OutboxError, match="larger than the whole outbox"):
        box.append("t", lambda s: _payload(s, 100))
    assert box.stats()["pending"] == 0


def test_a_corrupt_file_is_moved_aside_and_a_new_stream_starts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database, it is a torn write" * 200)
    box = Outbox(path, max_bytes=10**6, max_age_s=60)
    assert box.recovered_from is not None and box.recovered_from.exists()
    assert box.append("t", _payload) == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unwritable_state_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot create the state directory"):
        Outbox(blocker / "sub" / "o.sqlite", max_bytes=100, max_age_s=1)
