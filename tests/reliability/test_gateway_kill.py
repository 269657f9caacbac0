"""kill -9 of the daemon while the broker is down and a backlog waits in its spool.

Promise (docs/reliability.md, "Gateway faults"): everything the spool had committed is
delivered after the restart, byte for byte with its original seq; a kill loses only what the
gateway read after its last completed group commit (one `spool.batch_interval`, plus the commit
in progress), and of course what the meters sent while no gateway was running. And the tester
can tell (docs/testers.md): after each kill, the first telegram of each chain carries the gap
value as its prev_seq, and no session `start` is repeated.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.publish.sessions import GAP_SEQ
from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    first_received,
    models,
    record,
    soak_setting,
    spooled_rows,
    wait_flowing,
)
from tests.support.mosquitto import Received, wait_until

RATE_HZ = 5.0
BATCH_S = 1.0  # the shipped default of spool.batch_interval
#: Scheduling slack on a busy 2-core machine: the writer may commit a little late.
SLACK_S = 0.5


def tail_bound(rate: float = RATE_HZ, batch_s: float = BATCH_S) -> int:
    """The most telegrams a port may lose to one kill: one batch interval (+ slack) of
    telegrams, plus the one whose bytes were on the line."""
    return math.ceil(rate * (batch_s + SLACK_S)) + 1


def wait_commit(spool: Path, timeout: float = 15.0) -> float:
    """Wait for the daemon's next group commit (its write to the SQLite WAL); when it was."""
    wal = spool.with_name(spool.name + "-wal")

    def signature() -> tuple[int, int] | None:
        try:
            st = wal.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    before = signature()
    assert wait_until(lambda: signature() != before, timeout, 0.002), "no commit seen"
    return time.monotonic()


def gap_marks(messages: list[Received]) -> tuple[dict[str, int], int]:
    """Per variant, the distinct telegrams whose prev_seq is the gap value; and how many
    session starts arrived."""
    gaps: dict[str, set[int]] = {}
    starts = 0
    for m in messages:
        if m.topic.endswith("/session"):
            starts += json.loads(m.payload)["event"] == "start"
        elif m.topic.endswith("/telegram"):
            data = json.loads(m.payload)
            if data["prev_seq"] == GAP_SEQ:
                gaps.setdefault(data["variant"], set()).add(data["seq"])
    return {v: len(s) for v, s in gaps.items()}, starts


def kill_cycles(cycles: int, backlog_s: float, *, meters: int = 3) -> dict[str, Any]:
    """Broker down, backlog, kill -9, restart; `cycles` times. Returns the figures."""
    with FaultHarness(models(meters), rate=RATE_HZ, batch_interval=BATCH_S) as h:
        tester = h.tester()
        ledger = Ledger(h, tester)
        assert wait_flowing(ledger, h.variants, 5, 60), h.log()[-3000:]
        first = first_received(ledger, h.variants)
        excused: dict[str, set[int]] = {v: set() for v in h.variants}
        runs = []
        rng = random.Random(5)
        for cycle in range(cycles):
            h.broker.terminate()
            assert wait_until(
                lambda: h.safe_status().get("broker", {}).get("connected") is False, 15
            )
            time.sleep(backlog_s)  # the backlog builds up in the spool (scenario time)
            # When to kill, relative to the spool's group commits: even cycles just before the
            # next commit is due (the worst case), odd ones at a random moment.
            committed_at = wait_commit(h.spool_path())
            phase = 0.9 if cycle % 2 == 0 else rng.random()
            time.sleep(max(0.0, committed_at + phase * BATCH_S - time.monotonic()))
            spooled_before = h.safe_status().get("broker", {}).get("spooled")
            before = {v: h.sent(v) for v in h.variants}
            os.kill(h.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            assert h.proc is not None and h.proc.wait(10) == -signal.SIGKILL
            after = {v: h.sent(v) for v in h.variants}
            rows = spooled_rows(h.spool_path())
            raw_rows = {(v, s): p for v, s, k, p in rows if k == "raw"}
            committed = {
                v: {h.rig.meter(v).sequence_of(p) for (vv, _), p in raw_rows.items() if vv == v}
                for v in h.variants
            }
            assert all(None not in c for c in committed.values()), "a spooled raw is unknown"
            last_committed = {v: max(c, default=first[v]) for v, c in committed.items()}

            h.start_daemon()  # broker still down: the old backlog waits, new telegrams join it
            ready = {v: h.sent(v) for v in h.variants}
            time.sleep(2.0)  # the restarted daemon spools on top of the old backlog
            h.broker.start()
            restarted = time.monotonic()
            resumed_from = {}
            for v in h.variants:

                def resumed(v: str = v, mark: int = after[v]) -> bool:
                    ledger.update()
                    return any(n > mark for n in ledger[v].by_sim)

                assert wait_until(resumed, 90), f"{v} never resumed after the restart"
                resumed_from[v] = min(n for n in ledger[v].by_sim if n > after[v])
            now = {v: h.sent(v) for v in h.variants}
            for v in h.variants:
                lost_tail = set(range(last_committed[v] + 1, after[v] + 1))
                unread = set(range(after[v] + 1, resumed_from[v]))
                excused[v] |= {n for n in lost_tail | unread if n not in ledger[v].by_sim}
            assert ledger.wait_all({v: (first[v], now[v]) for v in h.variants}, 90, excused)
            for (v, seq), payload in raw_rows.items():
                got = ledger[v].by_gw.get(seq)
                assert got is not None, f"spooled {v} seq {seq} never delivered"
                assert got.digest == hash(payload), f"{v} seq {seq} delivered with other bytes"
            runs.append(
                {
                    "killed_after_last_commit_s": round(killed_at - committed_at, 3),
                    "spooled_messages_at_kill": spooled_before,
                    "spooled_rows_after_kill": len(rows),
                    "committed_telegrams": sum(len(c) for c in committed.values()),
                    "delivered_with_same_seq_and_bytes": len(raw_rows),
                    "uncommitted_tail": {
                        v: max(0, after[v] - last_committed[v]) for v in h.variants
                    },
                    "tail_bound": tail_bound(),
                    "emitted_during_kill_call": sum(after[v] - before[v] for v in h.variants),
                    "unread_while_down": {v: resumed_from[v] - after[v] - 1 for v in h.variants},
                    "resumed_within_telegrams_of_ready": {
                        v: resumed_from[v] - ready[v] for v in h.variants
                    },
                    "delivered_after_broker_start_s": round(time.monotonic() - restarted, 1),
                }
            )
        h.rig.pause()
        assert h.rig.wait_drained(10)
        last = {v: h.sent(v) for v in h.variants}
        assert ledger.wait_all({v: (first[v], last[v]) for v in h.variants}, 60, excused)
        accounts = {v: ledger.account(v, first[v], last[v]) for v in h.variants}
        for v, acc in accounts.items():
            assert set(acc["missing"]) <= excused[v], (v, set(acc["missing"]) - excused[v])
            assert acc["foreign"] == 0 and not acc["conflicts"], (v, acc)
            assert ledger.seq_follows_telegrams(v), f"{v}: a seq was reused after a restart"
            assert ledger.telegram_twins_complete(v)
        gaps, starts = gap_marks(tester.snapshot())
        assert gaps == {v: cycles for v in h.variants}, gaps  # one break per chain per kill
        assert starts <= 1, "a session start was repeated after a kill"
        for run in runs:
            for v, tail in run["uncommitted_tail"].items():
                assert tail <= run["tail_bound"], f"{v}: lost {tail} > one batch interval"
            for v, gap in run["resumed_within_telegrams_of_ready"].items():
                assert gap <= 2 + RATE_HZ, f"{v}: port read again only {gap} telegrams after READY"
        tester.stop()
        return {
            "kills": runs,
            "batch_interval_s": BATCH_S,
            "rate_hz": RATE_HZ,
            "meters": len(h.variants),
            "sent": sum(a["sent"] for a in accounts.values()),
            "received": sum(a["received"] for a in accounts.values()),
            "duplicates": sum(a["raw_duplicates"] for a in accounts.values()),
            "lost": sum(a["lost"] for a in accounts.values()),
            "lost_in_kill_windows": sum(len(e) for e in excused.values()),
            "chains_marked_broken_per_kill": {v: n // cycles for v, n in gaps.items()},
        }


def test_kill_9_with_a_spooled_backlog_delivers_it_after_restart() -> None:
    """kill -9 with the broker down: the committed backlog arrives with its seqs; only the
    last batch interval and the telegrams sent while no gateway ran are missing."""
    figures = kill_cycles(1, backlog_s=5.0)
    record("gateway_kill_quick", figures)
    assert figures["received"] + figures["lost"] == figures["sent"]
    assert figures["lost"] == figures["lost_in_kill_windows"]


@pytest.mark.slow
def test_repeated_kill_9_with_long_backlogs() -> None:
    """Soak: three kill -9s, each after 30 s of backlog; same promise each time."""
    figures = kill_cycles(int(soak_setting("kills", 3)), backlog_s=soak_setting("backlog_s", 30.0))
    record("gateway_kill_soak", figures)
    assert figures["lost"] == figures["lost_in_kill_windows"]
