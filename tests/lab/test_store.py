"""The store: schema version, WAL, whole transactions, and a new tester of an old name."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import LabStoreError
from gateway.lab.rules import Plan
from gateway.lab.store import SCHEMA_VERSION, Store

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_new_store_has_the_schema_version_and_runs_in_wal_mode(tmp_path: Path) -> None:
    """user_version is SCHEMA_VERSION, the journal is WAL, its folder is made."""
    path = tmp_path / "deep" / "lab.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    Store(path).close()  # opening again migrates nothing


def test_a_store_from_a_newer_lab_is_refused(tmp_path: Path) -> None:
    """A file whose schema is newer than this lab's is not touched."""
    path = tmp_path / "lab.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LabStoreError, match="newer"):
        Store(path)


def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    """An error half-way through a write rolls back what it had written."""
    with Store(tmp_path / "lab.sqlite") as store:
        with pytest.raises(RuntimeError), store.write() as tx:
            tx.add_tester("acme", NOW + timedelta(days=1), NOW)
            raise RuntimeError("boom")
        with store.read() as tx:
            assert tx.tester("acme") is None


def test_a_writer_waits_for_another(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a second writer blocks until the first commits (no lost update)."""
    path = tmp_path / "lab.sqlite"
    with Store(path) as first, Store(path) as second:
        with first.write() as tx:
            tx.ensure_rig("rig-a", NOW)
            tx.bump_version("rig-a")
            other = sqlite3.connect(path, timeout=0.1)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
        with second.write() as tx:
            assert tx.bump_version("rig-a") == 2


def test_a_removed_testers_name_can_start_clean(tmp_path: Path) -> None:
    """Only current testers count: a row marked removed frees its name, and the new tester
    of that name owns none of the old one's bookings."""
    with Store(tmp_path / "lab.sqlite") as store:
        with store.write() as tx:
            old = tx.add_tester("acme", NOW + timedelta(days=99), NOW)
            tx.ensure_rig("rig-a", NOW)
            plan = Plan("rig-a", "acme", NOW, NOW + timedelta(hours=22), 1)
            tx.add_booking(plan, old, NOW)
        with pytest.raises(LabStoreError, match="UNIQUE"), store.write() as tx:
            tx.add_tester("acme", NOW, NOW)  # one current tester per name
        db = sqlite3.connect(store.path)
        with db:
            db.execute("UPDATE testers SET removed_at = 'x' WHERE id = ?", (old,))
        with store.write() as tx:
            new = tx.add_tester("acme", NOW + timedelta(days=1), NOW)
            assert new != old
            record = tx.tester("acme")
            assert record is not None and record.id == new
            rows = db.execute("SELECT tester_id FROM bookings").fetchall()
        assert rows == [(old,)]
