"""The SQLite spool: WAL + synchronous=FULL, ordered reads, totals, the size bound, seq reserves."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import SpoolError
from gateway.publish import Publisher
from gateway.publish.outbox import SESSION_KIND
from gateway.publish.sessions import Announced, ChainLink, EdgeState, Session
from gateway.publish.spool import (
    CACHE_KIB,
    SCHEMA_VERSION,
    CommitBatch,
    CommitResult,
    DeadLetter,
    Spool,
    SpoolMessage,
)
from tests.publish.helpers import all_day, make_telegram, settings
from tests.support.mosquitto import REPO, MosquittoBroker, wait_until


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


class HangingSpool(Spool):
    """A spool whose commits, or the writer thread's reads, hang inside SQLite once told to,
    as on a hung disk (the statement runs a Python function that waits for `release`)."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        super().__init__(path, max_bytes=max_bytes)
        self.hang_commits = self.hang_reads = False
        self.entered, self.release = threading.Event(), threading.Event()
        self.closed = False

    def hang(self) -> None:
        """Block inside sqlite3_step, holding the connection's mutex as a hung disk would."""

        def wait() -> int:
            self.entered.set()
            self.release.wait(60)
            return 0

        self.db.create_function("p1gw_test_hang", 0, wait)
        self.db.execute("SELECT p1gw_test_hang()").fetchone()

    def commit(self, batch: CommitBatch) -> CommitResult:
        """A commit, after a statement that does not return if told so."""
        if self.hang_commits:
            self.hang()
        return super().commit(batch)

    def read_from(self, first_id: int, limit: int) -> list[SpoolMessage]:
        """The writer's reads hang if told so (start's own peek, on the caller's thread, not)."""
        if self.hang_reads and threading.current_thread().name == "p1gw-spool":
            self.hang()
        return super().read_from(first_id, limit)

    def close(self) -> None:
        """Close, and note it."""
        self.closed = True
        super().close()


def publisher_on(spool_dir: Path, port: int | None = None) -> tuple[Publisher, HangingSpool]:
    """A publisher (not started) on a HangingSpool in `spool_dir`."""
    config = settings(spool_dir, None, port=port)
    spool = HangingSpool(config.spool.path, max_bytes=config.spool.max_bytes)
    return Publisher(config, all_day("acme"), spool=spool), spool


def stuck_writer_scenario(folder: str) -> None:
    """Stop a publisher whose writer is stuck inside SQLite; print what stop left behind.

    Run in a process of its own by the test below: closing a connection under a statement in
    progress, as stop once did, can crash the interpreter (here: the statement runs a Python
    function, whose context the close frees).
    """
    pub, spool = publisher_on(Path(folder) / "spool")
    pub.start()
    spool.hang_commits = True
    pub.submit_telegram("v5", make_telegram(0), time.monotonic_ns(), time.time_ns())
    assert spool.entered.wait(10), "the writer never committed"
    stopper = threading.Thread(target=pub.stop, kwargs={"timeout": 1.0}, daemon=True)
    stopper.start()
    stopper.join(30)
    print(f"stop returned: {not stopper.is_alive()}", flush=True)
    print(f"spool open: {not spool.closed}", flush=True)
    print(f"last error: {pub.status().last_error}", flush=True)
    spool.release.set()
    stopper.join(30)
    assert wait_until(lambda: not pub.liveness().writer_alive, 10)
    spool.close()


def _run_scenario(call: str) -> str:
    """Run `tests.publish.test_spool.<call>` in a fresh interpreter; its output (exit 0)."""
    code = f"from tests.publish import test_spool as t; t.{call}"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    return proc.stdout


def test_stop_returns_while_the_spool_writer_is_stuck_in_sqlite(tmp_path: Path) -> None:
    """A writer stuck inside SQLite (a hung disk) cannot hold up stop: the spool is left open
    for the process exit, and the status says why."""
    out = _run_scenario(f"stuck_writer_scenario({str(tmp_path)!r})")
    assert "stop returned: True" in out
    assert "spool open: True" in out
    assert "last error: the spool writer did not stop" in out


def stuck_read_scenario(folder: str, port: int) -> None:
    """Restart a publisher onto a spool with a backlog and hang the writer's catch-up read inside
    SQLite; print whether a reader's submit, status and stop still return."""
    spool_dir = Path(folder) / "spool"
    earlier = Publisher(settings(spool_dir, None), all_day("acme"))  # no broker: all spooled
    earlier.start()
    for n in range(3):
        earlier.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
    assert earlier.commit_now(10), "the backlog was not committed"
    earlier.stop(timeout=1.0)

    pub, spool = publisher_on(spool_dir, port)
    spool.hang_reads = True
    pub.start()
    assert spool.entered.wait(30), "the writer never read the backlog"

    def returns(call: Any, *args: Any, **kwargs: Any) -> bool:
        """Whether call(*args) returns within 10 s (it runs on a daemon thread)."""
        t = threading.Thread(target=call, args=args, kwargs=kwargs, daemon=True)
        t.start()
        t.join(10)
        return not t.is_alive()

    mono, wall = time.monotonic_ns(), time.time_ns()
    submitted = returns(pub.submit_telegram, "v5", make_telegram(9), mono, wall)
    print(f"submit returned: {submitted}", flush=True)
    answered = returns(pub.status)
    print(f"status returned: {answered}", flush=True)
    print(f"stop returned: {returns(pub.stop, timeout=1.0)}", flush=True)
    print(f"last error: {pub.status().last_error if answered else None}", flush=True)
    spool.release.set()
    assert wait_until(lambda: not pub.liveness().writer_alive, 30)
    spool.close()


def test_a_spool_read_stuck_in_sqlite_holds_up_no_reader_and_not_stop(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The writer reads a backlog outside the publisher's lock: while that read hangs (a hung
    disk), a reader's submit, the status and stop all return."""
    out = _run_scenario(f"stuck_read_scenario({str(tmp_path)!r}, {broker.port})")
    assert "submit returned: True" in out, out
    assert "status returned: True" in out, out
    assert "stop returned: True" in out, out
    assert "last error: the spool writer did not stop" in out, out


# --- schema 2: prev_seq, the session state, the clean-stop mark ------------------------------

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE spool (
    id INTEGER PRIMARY KEY, variant TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, size INTEGER NOT NULL,
    received_ns INTEGER NOT NULL
);
CREATE TABLE dead (
    id INTEGER PRIMARY KEY, variant TEXT NOT NULL, seq INTEGER, kind TEXT NOT NULL,
    topic TEXT, payload BLOB NOT NULL, reason TEXT NOT NULL, reason_code INTEGER,
    at_ns INTEGER NOT NULL
);
CREATE TABLE seq (variant TEXT PRIMARY KEY, reserved INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
INSERT INTO spool VALUES (7, 'v5', 41, 'raw', 't', x'2f58', 1, 3, 5);
INSERT INTO seq VALUES ('v5', 1000);
"""


def test_a_schema_1_spool_is_migrated_and_its_rows_start_no_chain(tmp_path: Path) -> None:
    """A spool from before prev_seq: its rows are read back without one, state empty."""
    path = tmp_path / "s.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_1)
    db.close()
    s = Spool(path, max_bytes=10**6).open()
    assert s.read_from(0, 10) == [SpoolMessage(7, "v5", 41, "raw", "t", b"/X", 1, 5, None)]
    assert s.edge_state() == EdgeState()
    assert s.seq_reservations() == {"v5": 1000} and not s.unclean
    assert s.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == str(
        SCHEMA_VERSION
    )
    s.commit(CommitBatch(inserts=[SpoolMessage(8, "v5", 42, "raw", "t", b"/Y", 1, 6, 41)]))
    assert [m.prev_seq for m in s.read_from(0, 10)] == [None, 41]
    s.close()


def test_the_session_state_is_written_with_the_commit_and_read_back(tmp_path: Path) -> None:
    """Open sessions, chains, the next session id and the announced schedules round-trip."""
    state = EdgeState(
        sessions=(Session(3, "acme", 10, 20), Session(4, "bravo", 20, 30, gap=True)),
        chains=(ChainLink("acme", "v5", 3, 41), ChainLink("bravo", "v4", 4, 7)),
        next_session=5,
        announced=(Announced("acme", ((10, 20), (40, 50)), 9),),
    )
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6).open()
    s.commit(CommitBatch(inserts=[msg(1)], edges=state))
    s.close()
    s = Spool(tmp_path / "s.sqlite3", max_bytes=10**6).open()
    got = s.edge_state()
    assert got.sessions == state.sessions and got.next_session == 5
    assert sorted(got.chains, key=str) == sorted(state.chains, key=str)
    assert got.announced == state.announced
    s.commit(CommitBatch(edges=EdgeState(next_session=6)))  # replaced whole
    assert s.edge_state() == EdgeState(next_session=6)
    s.close()


def test_a_run_not_marked_clean_is_seen_as_unclean_by_the_next(tmp_path: Path) -> None:
    """open() marks the spool running; only mark_clean() clears it (kill -9 never does)."""
    path = tmp_path / "s.sqlite3"
    s = Spool(path, max_bytes=10**6).open()
    assert not s.unclean
    s.close()  # as if killed: never marked clean
    s = Spool(path, max_bytes=10**6).open()
    assert s.unclean
    s.mark_clean()
    s.close()
    s = Spool(path, max_bytes=10**6).open()
    assert not s.unclean
    s.close()


def test_the_size_bound_never_drops_a_session_marker(tmp_path: Path) -> None:
    """Over the bound, the oldest rows go, but not the markers among them."""
    s = Spool(tmp_path / "s.sqlite3", max_bytes=35).open()
    marker = SpoolMessage(2, "", 0, SESSION_KIND, "m", b"x" * 9, 1, 2)
    result = s.commit(CommitBatch(inserts=[msg(1), marker, msg(3), msg(4), msg(5)]))
    assert [m.id for m in s.read_from(0, 10)] == [2, 4, 5]
    assert (result.dropped, result.dropped_ids) == (2, (1, 3))
    assert (s.count, s.bytes) == (3, 32)
    s.close()
