"""The durable spool: SQLite (WAL, synchronous=FULL), written by one thread in group commits.

Tables: `spool` (messages handed over, not yet acknowledged by the broker, in id order, each
with its `prev_seq`), `dead` (messages the broker refused or that failed local checks, set
aside, bounded), `seq` (per variant, the highest seq durably reserved: seq values are never
reused across restarts), and the session state written in the same commit as the messages it
describes: `session` (the open sessions), `chain` (each chain's last seq), `announced` (what
each holder's retained schedule says) and `meta` (`next_session`; `running`, 1 from `open`
until `mark_clean`: found at 1, the last run stopped uncleanly).
Every method raises `gateway.errors.SpoolError` for any SQLite failure. The records it stores
(`SpoolMessage`, `DeadLetter`, `CommitBatch`) are the outbox's, re-exported here.

Schema 2 adds `spool.prev_seq` and the session tables; a schema 1 spool is migrated on open
(its rows have no prev_seq: each chain starts anew after them). Schema 3 adds `observed` (per
variant, what its meter last showed of itself, JSON) and `notice` (the notices not yet
acknowledged by the broker): `gateway.publish.notices` writes both, in one transaction, on its
own connection; an older spool gets the empty tables on open.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SpoolError
from gateway.publish.outbox import SESSION_KIND
from gateway.publish.outbox import CommitBatch as CommitBatch
from gateway.publish.outbox import DeadLetter as DeadLetter
from gateway.publish.outbox import SpoolMessage as SpoolMessage
from gateway.publish.sessions import Announced, ChainLink, EdgeState, Session

SCHEMA_VERSION = 3

#: SQLite's page cache, KiB (its default is 2000). The spool appends at the end and deletes
#: acknowledged rows near its head: a small cache serves both; a larger one only held ~2 MB
#: of the daemon's RSS after a flood.
CACHE_KIB = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY, variant TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL, size INTEGER NOT NULL,
    received_ns INTEGER NOT NULL, prev_seq INTEGER
);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY, variant TEXT NOT NULL, seq INTEGER, kind TEXT NOT NULL,
    topic TEXT, payload BLOB NOT NULL, reason TEXT NOT NULL, reason_code INTEGER,
    at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seq (variant TEXT PRIMARY KEY, reserved INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS session (
    id INTEGER PRIMARY KEY, holder TEXT NOT NULL, start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL, gap INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chain (
    holder TEXT NOT NULL, variant TEXT NOT NULL, session INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (holder, variant)
);
CREATE TABLE IF NOT EXISTS announced (
    holder TEXT PRIMARY KEY, slots TEXT NOT NULL, updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS observed (variant TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notice (
    topic TEXT PRIMARY KEY, payload BLOB NOT NULL, at_ns INTEGER NOT NULL
);
"""


#: Deletes go by `id IN (...)` lists of at most this many ids (a power of two).
_IN_LIST_MAX = 512


def _padded(ids: Sequence[int]) -> list[int]:
    """The ids, the last repeated up to the next power of two (an IN list matches a repeated id
    once): the SQL text then takes 10 forms, not one per length. sqlite3 caches a prepared
    statement per text (128 of them), and one per length of up to 500 ids each held ~4 MB of
    SQLite memory after a flood."""
    size = 1 << max(len(ids) - 1, 0).bit_length()
    return [*ids, *([ids[-1]] * (size - len(ids)))] if ids else []


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit did besides the batch itself."""

    dropped: int
    """Oldest messages deleted to get back under the size bound."""
    dropped_ids: tuple[int, int] | None
    """The (first, last) id of the dropped range, if any."""


class Spool:
    """The SQLite spool. Use it from one thread at a time (the publisher's writer thread)."""

    def __init__(self, path: Path, *, max_bytes: int, max_dead: int = 10_000):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_dead = max_dead
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.count = 0
        """Messages in the spool (committed)."""
        self.bytes = 0
        """Their total size."""
        self.max_id = 0
        """The highest id committed to `spool` or `dead`."""
        self.unclean = False
        """The last run on this spool did not stop cleanly (kill -9, power cut, crash)."""

    # --- life cycle --------------------------------------------------------------------

    def _lock(self) -> None:
        """Hold an exclusive lock on `<spool>.lock`: one process per spool, or seqs could repeat."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"{self.path}: in use by another process (lock {lock_path})") from None
        self._lock_fd = fd

    def open(self) -> Spool:
        """Open (creating the folder and schema if needed) and read the totals."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db = db
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(_SCHEMA)
            self._migrate(db)
            count, total = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM spool"
            ).fetchone()
            self.count, self.bytes = int(count), int(total)
            self.max_id = int(
                db.execute(
                    "SELECT max(coalesce((SELECT max(id) FROM spool), 0),"
                    " coalesce((SELECT max(id) FROM dead), 0))"
                ).fetchone()[0]
            )
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise SpoolError(f"{self.path}: cannot open the spool: {exc}") from exc
        except SpoolError:
            self.close()
            raise
        return self

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring an older schema up to SCHEMA_VERSION; note and set the `running` mark."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(spool)")}
        with self._transaction():
            if "prev_seq" not in columns:  # schema 1
                db.execute("ALTER TABLE spool ADD COLUMN prev_seq INTEGER")
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'running'").fetchone()
            self.unclean = row is not None and row[0] == "1"
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('running', '1')")

    def mark_clean(self) -> None:
        """The run stops cleanly: everything it took in is committed (the next open is clean)."""
        with self._transaction() as db:
            db.execute("UPDATE meta SET value = '0' WHERE key = 'running'")

    def close(self) -> None:
        """Close the database (idempotent)."""
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_fd is not None:
            with suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise SpoolError(f"{self.path}: the spool is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back and turned into SpoolError on failure."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc

    # --- reading -----------------------------------------------------------------------

    def read_from(self, first_id: int, limit: int) -> list[SpoolMessage]:
        """Up to `limit` spooled messages with id >= first_id, in id order."""
        try:
            rows = self.db.execute(
                "SELECT id, variant, seq, kind, topic, payload, qos, received_ns, prev_seq"
                " FROM spool WHERE id >= ? ORDER BY id LIMIT ?",
                (first_id, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc
        return [
            SpoolMessage(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8]) for r in rows
        ]

    def edge_state(self) -> EdgeState:
        """The session state last committed (empty on a new or a migrated spool)."""
        try:
            db = self.db
            sessions = tuple(
                Session(i, h, a, b, bool(g))
                for i, h, a, b, g in db.execute(
                    "SELECT id, holder, start_ns, end_ns, gap FROM session ORDER BY id"
                )
            )
            chains = tuple(
                ChainLink(*row)
                for row in db.execute("SELECT holder, variant, session, seq FROM chain")
            )
            announced = tuple(
                Announced(h, tuple((int(a), int(b)) for a, b in json.loads(text)), int(t))
                for h, text, t in db.execute("SELECT holder, slots, updated_ns FROM announced")
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'next_session'").fetchone()
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise SpoolError(f"{self.path}: session state: {exc}") from exc
        return EdgeState(sessions, chains, int(row[0]) if row else 1, announced)

    def seq_reservations(self) -> dict[str, int]:
        """Per variant, the highest seq durably reserved."""
        try:
            return dict(self.db.execute("SELECT variant, reserved FROM seq").fetchall())
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters, newest first."""
        try:
            rows = self.db.execute(
                "SELECT id, variant, seq, kind, topic, payload, reason, reason_code, at_ns"
                " FROM dead ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc
        return [
            DeadLetter(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8]) for r in rows
        ]

    def dead_count(self) -> int:
        """How many dead letters are kept."""
        try:
            return int(self.db.execute("SELECT count(*) FROM dead").fetchone()[0])
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc

    # --- writing -----------------------------------------------------------------------

    def reserve(self, reservations: Mapping[str, int]) -> None:
        """Durably record seq reservations now (one transaction)."""
        self.commit(CommitBatch(reservations=reservations))

    def commit(self, batch: CommitBatch) -> CommitResult:
        """Write one batch in one transaction, then apply the size bound (drop oldest)."""
        count, total = self.count, self.bytes
        dropped = 0
        dropped_ids: tuple[int, int] | None = None
        max_id = self.max_id
        with self._transaction() as db:
            if batch.inserts:
                db.executemany(
                    "INSERT OR REPLACE INTO spool"
                    " (id, variant, seq, kind, topic, payload, qos, size, received_ns, prev_seq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.id,
                            m.variant,
                            m.seq,
                            m.kind,
                            m.topic,
                            m.payload,
                            m.qos,
                            m.size,
                            m.received_ns,
                            m.prev_seq,
                        )
                        for m in batch.inserts
                    ],
                )
                count += len(batch.inserts)
                total += sum(m.size for m in batch.inserts)
                max_id = max(max_id, max(m.id for m in batch.inserts))
            gone = [d.id for d in batch.dead if d.in_spool]
            ids = list(batch.deletes) + gone
            for start in range(0, len(ids), _IN_LIST_MAX):
                chunk = _padded(ids[start : start + _IN_LIST_MAX])
                marks = ",".join("?" * len(chunk))
                n, size = db.execute(
                    f"SELECT count(*), coalesce(sum(size), 0) FROM spool WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                db.execute(f"DELETE FROM spool WHERE id IN ({marks})", chunk)
                count -= int(n)
                total -= int(size)
            if batch.dead:
                db.executemany(
                    "INSERT OR REPLACE INTO dead"
                    " (id, variant, seq, kind, topic, payload, reason, reason_code, at_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            d.id,
                            d.variant,
                            d.seq,
                            d.kind,
                            d.topic,
                            d.payload,
                            d.reason,
                            d.reason_code,
                            d.at_ns,
                        )
                        for d in batch.dead
                    ],
                )
                max_id = max(max_id, max(d.id for d in batch.dead))
                db.execute(
                    "DELETE FROM dead WHERE id NOT IN (SELECT id FROM dead ORDER BY id DESC"
                    " LIMIT ?)",
                    (self.max_dead,),
                )
            if batch.reservations:
                db.executemany(
                    "INSERT INTO seq(variant, reserved) VALUES (?, ?) ON CONFLICT(variant)"
                    " DO UPDATE SET reserved = max(reserved, excluded.reserved)",
                    list(batch.reservations.items()),
                )
            if batch.edges is not None:
                _write_edges(db, batch.edges)
            while total > self.max_bytes and count > 0:  # drop the oldest (never a marker)
                excess = total - self.max_bytes
                rows = db.execute(
                    "SELECT id, size FROM spool WHERE kind != ? ORDER BY id LIMIT 512",
                    (SESSION_KIND,),
                ).fetchall()
                freed, last = 0, None
                for row_id, size in rows:
                    freed += size
                    last = row_id
                    dropped += 1
                    count -= 1
                    if freed >= excess:
                        break
                if last is None:
                    break
                first = rows[0][0]
                db.execute("DELETE FROM spool WHERE id <= ? AND kind != ?", (last, SESSION_KIND))
                total -= freed
                dropped_ids = (dropped_ids[0] if dropped_ids else first, last)
        self.count, self.bytes, self.max_id = count, total, max_id
        return CommitResult(dropped, dropped_ids)


def _write_edges(db: sqlite3.Connection, state: EdgeState) -> None:
    """Replace the session state with `state` (inside the commit's transaction)."""
    db.execute("DELETE FROM session")
    db.executemany(
        "INSERT INTO session (id, holder, start_ns, end_ns, gap) VALUES (?, ?, ?, ?, ?)",
        [(s.id, s.holder, s.start_ns, s.end_ns, int(s.gap)) for s in state.sessions],
    )
    db.execute("DELETE FROM chain")
    db.executemany(
        "INSERT INTO chain (holder, variant, session, seq) VALUES (?, ?, ?, ?)",
        [(c.holder, c.variant, c.session, c.seq) for c in state.chains],
    )
    db.execute("DELETE FROM announced")
    db.executemany(
        "INSERT INTO announced (holder, slots, updated_ns) VALUES (?, ?, ?)",
        [(a.holder, json.dumps([list(x) for x in a.slots]), a.updated_ns) for a in state.announced],
    )
    db.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_session', ?)",
        (str(state.next_session),),
    )
