"""The notices' durable side: the observed state and the unacknowledged notices, in the spool.

The tables are the spool's (`observed`, `notice`, schema 3) but this store has its own SQLite
connection, so that the reader thread, which sees a meter change, can commit the new observed
state together with its notices in one transaction (rare: only on a change) without waiting
for the spool writer's group commit, and the writer deletes the notices the broker
acknowledged. SQLite's WAL and busy timeout serialise the two connections.
Every method raises `gateway.errors.SpoolError` for any SQLite failure.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

from gateway.errors import SpoolError


class NoticeStore:
    """The `observed` and `notice` tables of a spool file, on a connection of their own."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> NoticeStore:
        """Connect (the spool has created the tables: open it first)."""
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            db.execute("PRAGMA synchronous=FULL")
            db.execute("SELECT count(*) FROM notice").fetchone()
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: cannot open the notices: {exc}") from exc
        self._db = db
        return self

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._db is not None:
                with suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise SpoolError(f"{self.path}: the notices are not open")
        return self._db

    def observed(self) -> dict[str, str]:
        """Per variant, the observed state last stored (JSON text)."""
        with self._lock:
            try:
                return dict(self._conn().execute("SELECT variant, state FROM observed"))
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: {exc}") from exc

    def pending(self) -> list[tuple[str, bytes]]:
        """The notices not yet acknowledged, (topic, payload), oldest first."""
        with self._lock:
            try:
                rows = self._conn().execute("SELECT topic, payload FROM notice ORDER BY at_ns")
                return [(str(t), bytes(p)) for t, p in rows]
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: {exc}") from exc

    def record(
        self, observed: Mapping[str, str], notices: Sequence[tuple[str, bytes, int]]
    ) -> None:
        """Store new observed states and (topic, payload, at_ns) notices in one transaction."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(
                        "INSERT OR REPLACE INTO observed(variant, state) VALUES (?, ?)",
                        list(observed.items()),
                    )
                    db.executemany(
                        "INSERT OR REPLACE INTO notice(topic, payload, at_ns) VALUES (?, ?, ?)",
                        list(notices),
                    )
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: {exc}") from exc

    def delete(self, topics: Iterable[str]) -> None:
        """Forget notices the broker acknowledged."""
        with self._lock:
            try:
                self._conn().executemany(
                    "DELETE FROM notice WHERE topic = ?", [(t,) for t in topics]
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"{self.path}: {exc}") from exc
