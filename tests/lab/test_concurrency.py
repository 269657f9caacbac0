"""Several lab commands at once, as processes of their own: the store stays whole and right."""

from __future__ import annotations

import json
import sqlite3
from itertools import pairwise

from gateway.devkit.central import CentralBroker
from tests.lab.helpers import YEAR, Lab, retained


def test_concurrent_lab_commands_never_corrupt_the_store(lab: Lab, central: CentralBroker) -> None:
    """Eight processes book the same two rigs at once, half of them for the same span: the
    store passes SQLite's integrity check, holds exactly the bookings that were printed, no
    two overlap, and each rig's retained schedule is the store's latest version."""
    lab.ok("testers", "add", "acme", "--until", f"{YEAR + 1}-12-31")
    lab.ok("testers", "add", "beta", "--until", f"{YEAR + 1}-12-31")
    procs = [
        lab.process("book", holder, "--rig", "any", "--start", f"{YEAR}-03-{day:02d}T08:00")
        for day in (2, 2, 2, 2, 9, 12, 16, 20)
        for holder in ("acme" if day % 2 else "beta",)
    ]
    outcomes = [(p.wait(60), *p.communicate()) for p in procs]
    booked = [out.split() for rc, out, _ in outcomes if rc == 0]
    refused = [err for rc, _, err in outcomes if rc == 2]
    assert len(booked) + len(refused) == len(procs), outcomes
    assert len(booked) == 6 and all("no rig free" in e for e in refused)  # two rigs on day 2

    with sqlite3.connect(lab.db) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = db.execute(
            'SELECT id, rig, start, "end" FROM bookings ORDER BY rig, start'
        ).fetchall()
        versions = dict(db.execute("SELECT name, version FROM rigs").fetchall())
    assert sorted(int(b[1]) for b in booked) == sorted(r[0] for r in rows)
    for a, b in pairwise(rows):
        assert a[1] != b[1] or a[3] <= b[2], (a, b)
    for rig in ("rig-a", "rig-b"):
        body = retained(central, f"p1/{rig}/schedule")
        assert body is not None and body["version"] == versions[rig]
        assert len(body["slots"]) == sum(1 for r in rows if r[1] == rig), json.dumps(body)
