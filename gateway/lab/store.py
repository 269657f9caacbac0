"""The lab's store: SQLite in WAL mode, one writer at a time, every change in a transaction.

Tables: `testers` (name, agreement end, enabled; a removed tester keeps its row, so a new one
of the same name starts clean), `rigs` (the schedule's version, the version the broker
acknowledged and the one the rig says it applied), `bookings`, and `audit` (who changed what
and when). `PRAGMA user_version` is the schema's version; `MIGRATIONS` bring older files up.

Writers take the lock first (`BEGIN IMMEDIATE`), so concurrent lab commands wait for each
other (up to `BUSY_TIMEOUT`) instead of failing half-way; a failed command rolls back whole.
Times are stored as UTC text with microseconds (`2026-11-28T07:00:00.000000Z`), which sorts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import LabStoreError
from gateway.lab.rules import Booking, Plan, Tester

#: Seconds a command waits for another one's write lock.
BUSY_TIMEOUT = 60.0

MIGRATIONS: tuple[str, ...] = (
    # 1: testers, rigs, bookings, audit.
    """
    CREATE TABLE testers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        until TEXT NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        removed_at TEXT
    );
    CREATE UNIQUE INDEX testers_current_name ON testers(name) WHERE removed_at IS NULL;
    CREATE TABLE rigs (
        name TEXT PRIMARY KEY,
        account INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        told INTEGER NOT NULL DEFAULT 0,
        told_at TEXT,
        applied INTEGER,
        refused TEXT,
        applied_seen_at TEXT,
        added_at TEXT NOT NULL
    );
    CREATE TABLE bookings (
        id INTEGER PRIMARY KEY,
        rig TEXT NOT NULL REFERENCES rigs(name),
        tester_id INTEGER NOT NULL REFERENCES testers(id),
        holder TEXT NOT NULL,
        start TEXT NOT NULL,
        "end" TEXT NOT NULL,
        days INTEGER NOT NULL,
        cancelled_at TEXT,
        created_at TEXT NOT NULL,
        changed_at TEXT NOT NULL
    );
    CREATE INDEX bookings_rig_end ON bookings(rig, "end") WHERE cancelled_at IS NULL;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: the notices the lab posted (what `lab notice list` shows).
    """
    CREATE TABLE notices (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        rig TEXT,
        variant TEXT,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        actor TEXT NOT NULL,
        published_at TEXT
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def to_text(value: datetime) -> str:
    """A time as the store keeps it: UTC, microseconds, 'Z' (sorts as text)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    """A time the store kept, aware, in UTC."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TesterRecord:
    """A tester as stored."""

    id: int
    name: str
    until: datetime
    enabled: bool
    created_at: datetime

    @property
    def rules(self) -> Tester:
        """The tester as the booking rules see it."""
        return Tester(self.name, self.until, self.enabled)


@dataclass(frozen=True, slots=True)
class RigRecord:
    """A rig as stored: whether the lab made its account, and its schedule's versions."""

    name: str
    account: bool
    version: int
    told: int
    applied: int | None
    refused: str | None


@dataclass(frozen=True, slots=True)
class BookingRecord:
    """A booking as stored, cancelled or not."""

    id: int
    rig: str
    holder: str
    start: datetime
    end: datetime
    days: int
    cancelled: bool

    @property
    def booking(self) -> Booking:
        """The booking as the rules see it."""
        return Booking(self.id, self.rig, self.holder, self.start, self.end, self.days)


@dataclass(frozen=True, slots=True)
class NoticeRecord:
    """A notice the lab posted, and when the broker took it (None: not yet)."""

    id: str
    at: datetime
    rig: str | None
    variant: str | None
    kind: str
    text: str
    published_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail."""

    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class Tx:
    """One transaction's reads and writes (see `Store.write` and `Store.read`)."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def _one(self, sql: str, *args: object) -> Any:
        """The first row of a query, or None."""
        return self._db.execute(sql, args).fetchone()

    # --- testers ---------------------------------------------------------------------------

    def tester(self, name: str) -> TesterRecord | None:
        """The current tester of that name (a removed one is not)."""
        row = self._one(
            "SELECT id, name, until, enabled, created_at FROM testers "
            "WHERE name = ? AND removed_at IS NULL",
            name,
        )
        return None if row is None else _tester(row)

    def testers(self) -> list[TesterRecord]:
        """Every current tester, by name."""
        rows = self._db.execute(
            "SELECT id, name, until, enabled, created_at FROM testers "
            "WHERE removed_at IS NULL ORDER BY name"
        )
        return [_tester(r) for r in rows]

    def add_tester(self, name: str, until: datetime, at: datetime) -> int:
        """A new tester, enabled; its id."""
        cur = self._db.execute(
            "INSERT INTO testers (name, until, enabled, created_at) VALUES (?, ?, 1, ?)",
            (name, to_text(until), to_text(at)),
        )
        return int(cur.lastrowid or 0)

    def set_tester_until(self, name: str, until: datetime) -> None:
        """A current tester's new agreement end."""
        self._db.execute(
            "UPDATE testers SET until = ? WHERE name = ? AND removed_at IS NULL",
            (to_text(until), name),
        )

    def set_tester_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a current tester."""
        self._db.execute(
            "UPDATE testers SET enabled = ? WHERE name = ? AND removed_at IS NULL",
            (int(enabled), name),
        )

    def remove_tester(self, name: str, at: datetime) -> None:
        """Mark the current tester of that name removed (its row stays, for the audit)."""
        self._db.execute(
            "UPDATE testers SET removed_at = ?, enabled = 0 WHERE name = ? AND removed_at IS NULL",
            (to_text(at), name),
        )

    # --- rigs ------------------------------------------------------------------------------

    def rigs(self) -> list[RigRecord]:
        """Every rig the store knows, in the order they became known."""
        rows = self._db.execute(
            "SELECT name, account, version, told, applied, refused FROM rigs ORDER BY rowid"
        )
        return [_rig(r) for r in rows]

    def rig(self, name: str) -> RigRecord | None:
        """The rig of that name, if the store knows it."""
        row = self._one(
            "SELECT name, account, version, told, applied, refused FROM rigs WHERE name = ?", name
        )
        return None if row is None else _rig(row)

    def ensure_rig(self, name: str, at: datetime) -> RigRecord:
        """The rig's record, made (version 0, no account) when the store did not know it."""
        self._db.execute(
            "INSERT OR IGNORE INTO rigs (name, added_at) VALUES (?, ?)", (name, to_text(at))
        )
        record = self.rig(name)
        assert record is not None
        return record

    def set_account(self, name: str) -> None:
        """The lab made the rig's broker account."""
        self._db.execute("UPDATE rigs SET account = 1 WHERE name = ?", (name,))

    def bump_version(self, name: str) -> int:
        """The rig's schedule changed: its new version."""
        self._db.execute("UPDATE rigs SET version = version + 1 WHERE name = ?", (name,))
        return int(self._one("SELECT version FROM rigs WHERE name = ?", name)[0])

    def set_told(self, name: str, version: int, at: datetime) -> None:
        """The broker acknowledged the rig's schedule at `version` (the store's version too)."""
        self._db.execute(
            "UPDATE rigs SET version = MAX(version, ?), told = ?, told_at = ? WHERE name = ?",
            (version, version, to_text(at), name),
        )

    def set_applied(self, name: str, version: int, refused: str | None, at: datetime) -> None:
        """What the rig last said on `applied`."""
        self._db.execute(
            "UPDATE rigs SET applied = ?, refused = ?, applied_seen_at = ? WHERE name = ?",
            (version, refused, to_text(at), name),
        )

    # --- bookings --------------------------------------------------------------------------

    def booking(self, ident: int) -> BookingRecord | None:
        """The booking with that id, cancelled or not."""
        row = self._one(f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE id = ?", ident)
        return None if row is None else _booking(row)

    def bookings(
        self,
        *,
        rig: str | None = None,
        holder: str | None = None,
        ending_after: datetime | None = None,
        cancelled: bool = False,
    ) -> list[BookingRecord]:
        """Bookings by start: not cancelled (unless `cancelled`), optionally one rig's, one
        holder's, or those ending after a time."""
        where, args = [], []
        if not cancelled:
            where.append("cancelled_at IS NULL")
        if rig is not None:
            where.append("rig = ?")
            args.append(rig)
        if holder is not None:
            where.append("holder = ?")
            args.append(holder)
        if ending_after is not None:
            where.append('"end" > ?')
            args.append(to_text(ending_after))
        sql = f"SELECT {_BOOKING_COLUMNS} FROM bookings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY start, id", args)
        return [_booking(r) for r in rows]

    def add_booking(self, plan: Plan, tester_id: int, at: datetime) -> int:
        """Record an accepted plan; the new booking's id."""
        cur = self._db.execute(
            'INSERT INTO bookings (rig, tester_id, holder, start, "end", days, created_at, '
            "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                plan.rig,
                tester_id,
                plan.holder,
                to_text(plan.start),
                to_text(plan.end),
                plan.days,
                to_text(at),
                to_text(at),
            ),
        )
        return int(cur.lastrowid or 0)

    def change_booking(self, ident: int, plan: Plan, at: datetime) -> None:
        """A booking's new start, end and days (a move or an extension)."""
        self._db.execute(
            'UPDATE bookings SET start = ?, "end" = ?, days = ?, changed_at = ? WHERE id = ?',
            (to_text(plan.start), to_text(plan.end), plan.days, to_text(at), ident),
        )

    def cancel_booking(self, ident: int, at: datetime) -> None:
        """Cancel a booking (it stays in the store, marked)."""
        self._db.execute(
            "UPDATE bookings SET cancelled_at = ?, changed_at = ? WHERE id = ?",
            (to_text(at), to_text(at), ident),
        )

    # --- notices ---------------------------------------------------------------------------

    def add_notice(
        self,
        ident: str,
        at: datetime,
        rig: str | None,
        variant: str | None,
        kind: str,
        text: str,
        actor: str,
    ) -> None:
        """Record a notice, not yet published."""
        self._db.execute(
            "INSERT INTO notices (id, at, rig, variant, kind, text, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ident, to_text(at), rig, variant, kind, text, actor),
        )

    def set_notice_published(self, ident: str, at: datetime) -> None:
        """The broker took the notice."""
        self._db.execute("UPDATE notices SET published_at = ? WHERE id = ?", (to_text(at), ident))

    def notices(self) -> list[NoticeRecord]:
        """Every notice the lab posted, oldest first."""
        rows = self._db.execute(
            "SELECT id, at, rig, variant, kind, text, published_at FROM notices ORDER BY id"
        )
        return [
            NoticeRecord(
                r[0],
                from_text(r[1]),
                r[2],
                r[3],
                r[4],
                r[5],
                None if r[6] is None else from_text(r[6]),
            )
            for r in rows
        ]

    # --- audit -----------------------------------------------------------------------------

    def audit(
        self, at: datetime, actor: str, action: str, subject: str, detail: Mapping[str, Any]
    ) -> None:
        """Add a line to the audit trail: who did what to what, when, and the details."""
        self._db.execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (to_text(at), actor, action, subject, json.dumps(dict(detail), sort_keys=True)),
        )

    def audit_trail(self) -> list[AuditEntry]:
        """The whole audit trail, oldest first."""
        rows = self._db.execute(
            "SELECT at, actor, action, subject, detail FROM audit ORDER BY id"
        ).fetchall()
        return [AuditEntry(from_text(r[0]), r[1], r[2], r[3], json.loads(r[4])) for r in rows]


_BOOKING_COLUMNS = 'id, rig, holder, start, "end", days, cancelled_at'


def _tester(row: Any) -> TesterRecord:
    """A testers row as a record."""
    return TesterRecord(row[0], row[1], from_text(row[2]), bool(row[3]), from_text(row[4]))


def _rig(row: Any) -> RigRecord:
    """A rigs row as a record."""
    return RigRecord(row[0], bool(row[1]), int(row[2]), int(row[3]), row[4], row[5])


def _booking(row: Any) -> BookingRecord:
    """A bookings row as a record."""
    return BookingRecord(
        row[0], row[1], row[2], from_text(row[3]), from_text(row[4]), row[5], row[6] is not None
    )


class Store:
    """The lab's SQLite file: open, migrate, and run transactions on it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LabStoreError(f"cannot open the lab's store {path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise LabStoreError(f"cannot use the lab's store {path}: {exc}") from None

    def _migrate(self) -> None:
        """Bring the file's schema up to SCHEMA_VERSION, in one transaction."""
        with self.write() as _:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise LabStoreError(
                    f"{self.path} has schema {version}, newer than this lab's {SCHEMA_VERSION}"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            if version != SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction: the lock taken first (BEGIN IMMEDIATE), committed whole when
        the block ends, rolled back whole when it raises."""
        with self._transaction("BEGIN IMMEDIATE") as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: one consistent view of the store."""
        with self._transaction("BEGIN") as tx:
            yield tx

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Tx]:
        """Run the block in a transaction; sqlite3's errors become LabStoreError."""
        try:
            self._db.execute(begin)
        except sqlite3.Error as exc:
            raise LabStoreError(f"the lab's store {self.path}: {exc}") from None
        try:
            yield Tx(self._db)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise LabStoreError(f"the lab's store {self.path}: {exc}") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Undo the open transaction (SQLite may have rolled it back already)."""
        with suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
