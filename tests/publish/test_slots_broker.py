"""Slot boundaries, refused messages and clock trust, end to end through a real mosquitto."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.p1.telegram import Telegram
from gateway.publish import SubmitOutcome, rfc3339_utc
from gateway.publish.schedule import datetime_to_ns
from tests.publish.helpers import (
    counter_of,
    make_telegram,
    schedule,
    settings,
    telegrams,
)
from tests.support.mosquitto import Received, wait_until

NS = 1_000_000_000
MS = 1_000_000


def expected_holder(wall_ns: int, spans: list[tuple[str, int, int]]) -> str | None:
    """Who holds [start, end) at wall_ns, by plain comparison."""
    for holder, start, end in spans:
        if start <= wall_ns < end:
            return holder
    return None


def test_every_telegram_lands_on_the_side_of_its_reception_time(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """Injected reception times around boundaries, to the nanosecond: zero cross-overs."""
    t0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    spans_dt = [
        ("acme", t0, t0 + timedelta(seconds=2)),
        ("bravo", t0 + timedelta(seconds=2), t0 + timedelta(seconds=4)),
        # gap [4 s, 5 s): nobody
        ("acme", t0 + timedelta(seconds=5), t0 + timedelta(seconds=6)),
        ("acme", t0 + timedelta(seconds=6), t0 + timedelta(seconds=7)),  # back to back
    ]
    spans = [(h, datetime_to_ns(s), datetime_to_ns(e)) for h, s, e in spans_dt]
    base = datetime_to_ns(t0)
    times = [base - NS + k * 50 * MS for k in range(180)]  # -1 s .. +8 s, every 50 ms
    for _, start, end in spans:
        times += [start - 1, start, end - 1, end]
    times.sort()
    a = probe("acme", ["p1/rig-a/slot/acme/#"])
    b = probe("bravo", ["p1/rig-a/slot/bravo/#"])
    pub = publisher(settings(spool_dir, broker), schedule(*spans_dt))
    want = {"acme": [], "bravo": [], None: []}
    for n, wall in enumerate(times):
        outcome = pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), wall)
        holder = expected_holder(wall, spans)
        want[holder].append(n)
        assert outcome is (SubmitOutcome.ROUTED if holder else SubmitOutcome.UNROUTED)
    assert pub.flush(20)
    assert a.wait_for(lambda ms: len(telegrams(ms)) >= len(want["acme"]), 10)
    assert b.wait_for(lambda ms: len(telegrams(ms)) >= len(want["bravo"]), 10)
    time.sleep(0.3)
    got_a = [counter_of(g.payload) for g in telegrams(a.snapshot())]
    got_b = [counter_of(g.payload) for g in telegrams(b.snapshot())]
    assert got_a == want["acme"] and got_b == want["bravo"]
    for g in telegrams(a.snapshot()) + telegrams(b.snapshot()):
        wall = times[counter_of(g.payload)]
        assert g.payload["received_at"] == rfc3339_utc(wall)
    # The 1 ns either side of each boundary went to the right side.
    boundary = datetime_to_ns(t0 + timedelta(seconds=2))
    assert times.index(boundary - 1) in got_a and times.index(boundary) in got_b
    back_to_back = datetime_to_ns(t0 + timedelta(seconds=6))
    assert {times.index(back_to_back - 1), times.index(back_to_back)} <= set(got_a)
    print(
        f"\nslot boundary: submitted {len(times)}; acme expected {len(want['acme'])} got "
        f"{len(got_a)}; bravo expected {len(want['bravo'])} got {len(got_b)}; outside "
        f"{len(want[None])}; crossed 0"
    )


def test_real_time_slots_of_two_seconds(broker, probe, publisher, spool_dir: Path) -> None:
    """A live stream at 20 Hz across real 2-second slots: each message on its own side."""
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    spans_dt = [
        ("acme", now, now + timedelta(seconds=2)),
        ("bravo", now + timedelta(seconds=2), now + timedelta(seconds=4)),
    ]
    a = probe("acme", ["p1/rig-a/slot/acme/#"])
    b = probe("bravo", ["p1/rig-a/slot/bravo/#"])
    pub = publisher(settings(spool_dir, broker), schedule(*spans_dt))
    end = now + timedelta(seconds=5)
    walls: list[int] = []
    while datetime.now(UTC) < end:
        wall = time.time_ns()
        pub.submit_telegram("v5", make_telegram(len(walls)), time.monotonic_ns(), wall)
        walls.append(wall)
        time.sleep(0.05)
    assert pub.flush(20)
    spans = [(h, datetime_to_ns(s), datetime_to_ns(e)) for h, s, e in spans_dt]
    want_a = [n for n, w in enumerate(walls) if expected_holder(w, spans) == "acme"]
    want_b = [n for n, w in enumerate(walls) if expected_holder(w, spans) == "bravo"]
    assert a.wait_for(lambda ms: len(telegrams(ms)) >= len(want_a), 10)
    assert b.wait_for(lambda ms: len(telegrams(ms)) >= len(want_b), 10)
    time.sleep(0.3)
    assert [counter_of(g.payload) for g in telegrams(a.snapshot())] == want_a
    assert [counter_of(g.payload) for g in telegrams(b.snapshot())] == want_b
    assert len(want_a) > 20 and len(want_b) > 20
    # Each holder's stream is bracketed by its session markers (bravo's end: the lag after).
    assert b.wait_for(lambda ms: stream(ms)[-1:] == ["end"], 10)
    assert stream(a.snapshot()) == ["start"] + ["telegram"] * len(want_a) + ["end"]
    assert stream(b.snapshot()) == ["start"] + ["telegram"] * len(want_b) + ["end"]
    print(
        f"\nreal-time slots: submitted {len(walls)}; acme {len(want_a)}/{len(want_a)}, "
        f"bravo {len(want_b)}/{len(want_b)}, crossed 0"
    )


def stream(messages: list[Received]) -> list[str]:
    """The kinds of a holder's telegram and session messages, in arrival order: session
    messages by their event."""
    out = []
    for m in messages:
        kind = m.topic.rsplit("/", 1)[1]
        if kind == "session":
            out.append(json.loads(m.payload)["event"])
        elif kind == "telegram":
            out.append(kind)
    return out


def test_a_backlog_across_a_handover_is_bracketed_after_an_outage(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """Broker down through acme's end and bravo's start: after it returns each tester gets
    its backlog bracketed, acme's end after acme's last telegram."""
    now = time.time_ns()
    handover = datetime.fromtimestamp(now // NS, UTC) + timedelta(seconds=1)
    sched = schedule(
        ("acme", handover - timedelta(hours=1), handover),
        ("bravo", handover, handover + timedelta(hours=1)),
    )
    a = probe("acme", ["p1/rig-a/slot/acme/#"], client_id="acme-backlog", persistent=True)
    b = probe("bravo", ["p1/rig-a/slot/bravo/#"], client_id="bravo-backlog", persistent=True)
    pub = publisher(settings(spool_dir, broker), sched)
    assert wait_until(lambda: pub.status().connected, 10)
    broker.terminate()
    assert wait_until(lambda: not pub.status().connected, 10)
    base = datetime_to_ns(handover)
    walls = [base + k * 200 * MS for k in range(-5, 5)]  # 5 before the handover, 5 after
    for n, wall in enumerate(walls):
        assert pub.submit_telegram("v5", make_telegram(n), 0, wall) is SubmitOutcome.ROUTED

    # acme's end comes by the clock, the end lag after the handover: still without a broker.
    def spooled_events() -> list[str]:
        db = sqlite3.connect(spool_dir / "spool.sqlite3")
        try:
            rows = db.execute("SELECT payload FROM spool WHERE kind = 'session' ORDER BY id")
            return [json.loads(p)["event"] for (p,) in rows]
        finally:
            db.close()

    assert wait_until(lambda: spooled_events()[-1:] == ["end"], 10), pub.status()
    broker.start()
    assert a.wait_for(lambda ms: stream(ms)[-1:] == ["end"], 20)
    assert b.wait_for(lambda ms: len(telegrams(ms)) == 5, 20)
    assert stream(a.snapshot()) == ["start"] + ["telegram"] * 5 + ["end"]
    assert stream(b.snapshot()) == ["start"] + ["telegram"] * 5
    assert [counter_of(g.payload) for g in telegrams(b.snapshot())] == [5, 6, 7, 8, 9]


def test_refused_and_locally_failing_messages_are_set_aside(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """0x87 (not authorised) and an unencodable telegram go to dead letters; the rest flows."""
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    sched = schedule(
        ("banned", t0, t0 + timedelta(hours=1)),
        ("acme", t0 + timedelta(hours=1), t0 + timedelta(hours=2)),
    )
    banned_wall = datetime_to_ns(t0) + NS
    acme_wall = datetime_to_ns(t0 + timedelta(hours=1)) + NS
    a = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), sched)
    assert wait_until(lambda: pub.status().connected, 10)
    sent_acme = []
    for n in range(30):
        if n % 3 == 0:
            pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), banned_wall)
        elif n % 3 == 1:
            pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), acme_wall)
            sent_acme.append(n)
        else:
            bad = Telegram(b"/X\r\n!\r\n", "V5", "X", None, {"1-0:1.8.1": {"value": 1.5}})
            assert pub.submit_telegram("v5", bad, 0, acme_wall) is SubmitOutcome.REJECTED
    for bad_variant in ["v/5", "v+", "v#", "$v", "v\x005"]:
        assert (
            pub.submit_telegram(bad_variant, make_telegram(99), 0, acme_wall)
            is SubmitOutcome.REJECTED
        )
    assert pub.flush(20), pub.status()
    assert a.wait_for(lambda ms: len(telegrams(ms)) >= len(sent_acme), 10)
    got = [counter_of(g.payload) for g in telegrams(a.snapshot())]
    assert got == sent_acme
    st = pub.status()
    # 10 banned telegrams x (telegram + raw), and the banned holder's session start
    assert st.counters.refused == 21
    assert st.counters.rejected_local == 15
    assert st.outstanding == 0
    assert pub.commit_now(5)
    db = sqlite3.connect(spool_dir / "spool.sqlite3")
    rows = db.execute("SELECT reason, reason_code, topic FROM dead").fetchall()
    db.close()
    refused = [r for r in rows if r[1] == 0x87]
    assert len(refused) == 21 and all("/slot/banned/" in r[2] for r in refused)
    assert len([r for r in rows if r[1] is None]) == 15
    print(
        f"\nrefused: sent {len(sent_acme)} to acme, received {len(got)}; "
        f"dead letters: {len(refused)} refused (0x87), 15 failed local checks"
    )


def test_unsynchronised_clock_routes_nothing_then_rebuilds_wall_time(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """Unsynced: held, nothing published; synced: routed with wall time from mono."""
    true_now = datetime.now(UTC)
    sched = schedule(
        ("acme", true_now - timedelta(hours=1), true_now + timedelta(hours=1)),
        ("bravo", true_now - timedelta(hours=5), true_now - timedelta(hours=2)),
    )
    synced = threading.Event()
    offset = {"ns": -3 * 3600 * NS}  # the unsynced clock is 3 h behind: bravo's slot

    def wall() -> int:
        return time.time_ns() + offset["ns"]

    a = probe("acme", ["p1/rig-a/slot/acme/#"])
    b = probe("bravo", ["p1/rig-a/slot/bravo/#"])
    pub = publisher(
        settings(spool_dir, broker, require_sync=True),
        sched,
        clock_synced=synced.is_set,
        wall_ns=wall,
    )
    assert wait_until(lambda: pub.status().connected, 10)
    monos = []
    for n in range(10):
        mono = time.monotonic_ns()
        monos.append(mono)
        assert pub.submit_telegram("v5", make_telegram(n), mono, wall()) is SubmitOutcome.HELD
        time.sleep(0.02)
    time.sleep(1.0)
    assert a.snapshot() == [] and b.snapshot() == []
    assert pub.status().held == 10 and pub.status().counters.published == 0
    # NTP steps the clock and reports sync: the writer releases the held telegrams itself.
    offset["ns"] = 0
    synced.set()
    assert a.wait_for(lambda ms: len(telegrams(ms)) == 10, 10)
    got = telegrams(a.snapshot())
    assert [counter_of(g.payload) for g in got] == list(range(10))
    mono_now, wall_now = time.monotonic_ns(), time.time_ns()
    for g, mono in zip(got, monos, strict=True):
        rebuilt = datetime.fromisoformat(g.payload["received_at"].replace("Z", "+00:00"))
        true_wall = mono + (wall_now - mono_now)
        assert abs(datetime_to_ns(rebuilt) - true_wall) < 50 * MS
    assert b.snapshot() == []
    assert pub.status().counters.rebuilt == 10 and pub.status().held == 0
    print(
        "\nclock trust: 10 held while unsynced (published 0), 10 routed after sync to acme "
        "with rebuilt wall time (|error| < 50 ms), 0 to bravo"
    )
