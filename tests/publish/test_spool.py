"""The SQLite spool: WAL + synchronous=FULL, ordered reads, totals, the size bound, seq reserves."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.errors import SpoolError
from gateway.publish.spool import CACHE_KIB, CommitBatch, DeadLetter, Spool, SpoolMessage


def msg(i: int, size: int = 10, variant: str = "v5") -> SpoolMessage:
    """A message with id i and a payload of `size` bytes."""
    return SpoolMessage(i, variant, i, "telegram", "t", b"x" * size, 1, i)


def test_opens_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    """journal_mode=WAL, synchronous=FULL (2) on the connection in use."""
    s = Spool(tmp_path / "d" / "s.sqlite3", max_bytes=10**6).open()
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    s.close()


def test_page_cache_is_bounded_small(tmp_path: Path) -> None:
    """The connection's page cache is CACHE_KIB, not SQLite's 2000 KiB default."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6).open()
    assert s.db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
    s.close()


def test_deletes_of_any_count_use_few_statement_texts(tmp_path: Path) -> None:
    """Deleting 1..40 ids per commit keeps the totals right with at most 7 DELETE texts (one
    per power of two), so sqlite3's statement cache does not fill with one per length."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**9).open()
    s.commit(CommitBatch(inserts=[msg(i) for i in range(1, 821)]))
    lengths: set[int] = set()  # the trace shows values bound: count the IN list's items

    def trace(sql: str) -> None:
        """Record the length of a DELETE's IN list."""
        if sql.startswith("DELETE FROM spool WHERE id IN ("):
            lengths.add(sql[sql.index("(") + 1 : sql.rindex(")")].count(",") + 1)

    s.db.set_trace_callback(trace)
    next_id = 1
    for count in range(1, 41):
        s.commit(CommitBatch(deletes=list(range(next_id, next_id + count))))
        next_id += count
    s.db.set_trace_callback(None)
    assert (s.count, s.bytes) == (0, 0)
    assert s.db.execute("SELECT count(*) FROM spool").fetchone()[0] == 0
    assert lengths == {1, 2, 4, 8, 16, 32, 64}
    s.close()


def test_commit_read_delete_and_reopen(tmp_path: Path) -> None:
    """Rows come back in id order; totals and max id survive a reopen."""
    path = tmp_path / "s.sqlite3"
    s = Spool(path, max_bytes=10**6).open()
    s.commit(CommitBatch(inserts=[msg(i) for i in (3, 1, 2, 5)]))
    assert [m.id for m in s.read_from(2, 10)] == [2, 3, 5]
    s.commit(CommitBatch(deletes=[1, 3]))
    assert (s.count, s.bytes, s.max_id) == (2, 22, 5)
    s.close()
    s = Spool(path, max_bytes=10**6).open()
    assert (s.count, s.bytes, s.max_id) == (2, 22, 5)
    assert [m.id for m in s.read_from(0, 10)] == [2, 5]
    s.close()


def test_full_spool_drops_oldest_and_says_so(tmp_path: Path) -> None:
    """Over max_bytes, the oldest rows go until the total fits; the count is returned."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=55).open()  # each message is 11 bytes
    result = s.commit(CommitBatch(inserts=[msg(i) for i in range(1, 11)]))
    assert result.dropped == 5 and result.dropped_ids == (1, 5)
    assert [m.id for m in s.read_from(0, 100)] == [6, 7, 8, 9, 10]
    assert s.bytes <= 55
    s.close()


def test_dead_letters_move_out_of_the_queue_and_are_bounded(tmp_path: Path) -> None:
    """A dead letter deletes its spool row and keeps only the newest max_dead."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6, max_dead=2).open()
    s.commit(CommitBatch(inserts=[msg(i) for i in range(1, 5)]))
    dead = [DeadLetter(i, "v5", i, "telegram", "t", b"x", "refused", 0x87, 0) for i in (1, 2, 3)]
    s.commit(CommitBatch(dead=dead))
    assert [m.id for m in s.read_from(0, 10)] == [4]
    assert [d.id for d in s.dead_letters()] == [3, 2]
    assert s.dead_count() == 2 and s.count == 1
    s.close()


def test_seq_reservations_only_grow(tmp_path: Path) -> None:
    """A reservation never moves backwards."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6).open()
    s.reserve({"v5": 1000, "v4": 10})
    s.reserve({"v5": 500})
    assert s.seq_reservations() == {"v5": 1000, "v4": 10}
    s.close()


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    """A batch that fails half way rolls back whole: SpoolError, rows and totals unchanged."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6).open()
    s.commit(CommitBatch(inserts=[msg(1)]))
    bad = SpoolMessage(2, None, 2, "telegram", "t", b"x", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(SpoolError):
        s.commit(CommitBatch(inserts=[msg(3), bad]))
    assert (s.count, [m.id for m in s.read_from(0, 10)]) == (1, [1])
    s.close()


def test_unopenable_path_raises_spool_error(tmp_path: Path) -> None:
    """A spool whose folder is a file cannot open: SpoolError, not sqlite3/OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError):
        Spool(blocker / "s.sqlite3", max_bytes=1).open()


def test_external_reader_sees_committed_rows(tmp_path: Path) -> None:
    """Committed rows are visible to another connection (what a restart will read)."""
    path = tmp_path / "s.sqlite3"
    s = Spool(path, max_bytes=10**6).open()
    s.commit(CommitBatch(inserts=[msg(1), msg(2)]))
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM spool").fetchone()[0] == 2
    other.close()
    s.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    """A second opener of the same spool is refused (it could hand out the same seqs)."""
    path = tmp_path / "s.sqlite3"
    first = Spool(path, max_bytes=10**6).open()
    with pytest.raises(SpoolError, match="in use"):
        Spool(path, max_bytes=10**6).open()
    first.close()
    Spool(path, max_bytes=10**6).open().close()
