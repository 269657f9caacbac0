"""kill -9 of a real publisher process: the spooled backlog is delivered, seqs never reused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.publish.helpers import check_order, counter_of, telegrams
from tests.support.mosquitto import REPO, wait_until

VARIANTS = ["v5", "fluvius"]


class Driver:
    """tests/publish/driver.py in its own process, its stdout parsed as it comes."""

    def __init__(self, **cfg: Any):
        self.exits_when_idle = bool(cfg.get("exit_when_idle"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.publish.driver", json.dumps(cfg)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.subs: list[tuple[str, int, str]] = []
        self.status: dict[str, Any] = {}
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Parse stdout lines."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            kind, _, rest = line.partition(" ")
            if kind == "sub":
                v, n, outcome = rest.split()
                self.subs.append((v, int(n), outcome))
            elif kind == "status":
                self.status = json.loads(rest)

    def wait(self, predicate, timeout: float) -> bool:
        """Wait until predicate(self) holds (or the process exits); its last value."""
        wait_until(lambda: predicate(self) or self.proc.poll() is not None, timeout)
        return bool(predicate(self))

    def kill9(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def finish(self, timeout: float = 20.0) -> int:
        """The exit code: SIGTERM first unless it exits by itself once idle.

        (A SIGTERM that lands while the interpreter finalises, after it restored the default
        handler, would kill it with -15 instead of the clean exit being checked.)
        """
        if not self.exits_when_idle and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stderr(self) -> str:
        """What the process wrote to stderr."""
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def spooled_rows(spool_dir: Path) -> list[tuple[str, int, str, bytes]]:
    """(variant, seq, kind, payload) of every spooled row, read by an outside connection."""
    db = sqlite3.connect(spool_dir / "spool.sqlite3")
    try:
        return [
            (v, s, k, bytes(p))
            for v, s, k, p in db.execute(
                "SELECT variant, seq, kind, payload FROM spool ORDER BY id"
            )
        ]
    finally:
        db.close()


def test_kill_9_with_a_spooled_backlog_then_restart_delivers_it(broker, probe, tmp_path) -> None:
    """Broker down, backlog spooled, kill -9; restart: the backlog arrives with the same seqs."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"], client_id="acme-crash", persistent=True)
    broker.terminate()
    spool_dir = tmp_path / "spool"
    count = 60
    first = Driver(
        spool_dir=str(spool_dir), port=broker.port, count=count, rate=100.0, variants=VARIANTS
    )
    total = count * len(VARIANTS)
    assert first.wait(
        lambda d: (
            d.status.get("spooled") == 2 * total + 1  # and the session's start
            and d.status.get("pending") == 0
            and len(d.subs) == total
        ),
        30,
    ), first.lines[-5:]
    assert first.status["published"] == 0 and not first.status["connected"]
    first.kill9()
    backlog = spooled_rows(spool_dir)
    assert len(backlog) == 2 * total + 1
    assert backlog[0][2] == "session"  # the start, before the first telegram
    broker.start()
    assert wait_until(lambda: tester.connects >= 2, 20)
    second = Driver(
        spool_dir=str(spool_dir), port=broker.port, count=0, exit_when_idle=True, variants=VARIANTS
    )
    assert tester.wait_for(lambda ms: len({(g.variant, g.seq) for g in telegrams(ms)}) >= total, 30)
    assert second.finish() == 0, second.stderr()
    got = telegrams(tester.snapshot())
    order, dups = check_order(got)
    spooled = {(v, s): p for v, s, k, p in backlog if k == "telegram"}
    assert {(g.variant, g.seq) for g in got} == set(spooled)
    for g in got:
        assert g.raw == spooled[(g.variant, g.seq)], "redelivered payload differs from spooled"
    for v in VARIANTS:
        assert order[v] == sorted(order[v])
        assert [counter_of(g.payload) for g in got if g.variant == v][:count] == list(range(count))
    raws = [m for m in tester.snapshot() if m.topic.endswith("/raw")]
    assert {(m.prop("variant"), int(m.prop("seq") or 0)) for m in raws} == set(spooled)
    assert spooled_rows(spool_dir) == []
    print(
        f"\nkill -9 with backlog: submitted {total} telegrams ({2 * total} messages), spooled "
        f"{len(backlog)}, killed; after restart received {len(got)} telegram messages = "
        f"{len(got) - dups} distinct + {dups} duplicates, {len(raws)} raw; same seq for all; "
        "missing 0"
    )


def test_kill_9_while_streaming_never_reuses_a_seq(broker, probe, tmp_path) -> None:
    """kill -9 mid-stream (broker up), restart: new seqs all above the old; will says offline."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    watcher = probe("bravo", ["p1/rig-a/status"])
    spool_dir = tmp_path / "spool"
    first = Driver(
        spool_dir=str(spool_dir),
        port=broker.port,
        count=100_000,
        rate=50.0,
        variants=VARIANTS,
        batch_interval=1.0,
    )
    assert first.wait(lambda d: len(d.subs) >= 200, 30)
    first.kill9()
    run1 = {(v, n) for v, n, _ in first.subs}
    assert watcher.wait_for(
        lambda ms: any(json.loads(m.payload).get("reason") == "connection lost" for m in ms), 15
    )
    second = Driver(
        spool_dir=str(spool_dir),
        port=broker.port,
        count=50,
        rate=50.0,
        start_n=1_000_000,
        variants=VARIANTS,
        exit_when_idle=True,
    )
    assert second.wait(lambda d: "done" in d.lines, 30)
    assert second.finish() == 0, second.stderr()
    assert tester.wait_for(
        lambda ms: sum(counter_of(g.payload) >= 1_000_000 for g in telegrams(ms)) >= 100, 20
    )
    got = telegrams(tester.snapshot())
    order, dups = check_order(got)
    seq_of = {(g.variant, counter_of(g.payload)): g.seq for g in got}
    delivered1 = {k for k in seq_of if k[1] < 1_000_000}
    for v in VARIANTS:
        assert order[v] == sorted(order[v])
        old = [s for (vv, n), s in seq_of.items() if vv == v and n < 1_000_000]
        new = [s for (vv, n), s in seq_of.items() if vv == v and n >= 1_000_000]
        assert len(new) == 50 and min(new) > max(old), f"{v}: a seq was reused"
    lost = run1 - delivered1
    states = [json.loads(m.payload)["state"] for m in watcher.snapshot()]
    print(
        f"\nkill -9 while streaming (batch 1 s): run 1 submitted {len(run1)} telegrams, "
        f"delivered {len(delivered1)} distinct, lost {len(lost)}; run 2 submitted 100, "
        f"delivered 100; duplicates {dups}; seqs after restart all above run 1's; "
        f"status seen: {states}"
    )
    assert len(lost) <= 2 * 50 * 1.5  # at most about one batch interval at 50 Hz x 2 variants


def test_kill_9_with_broker_down_loses_at_most_one_batch_interval(broker, tmp_path) -> None:
    """Broker down, kill -9 mid-stream: what is lost is what the last group commit missed."""
    broker.terminate()
    spool_dir = tmp_path / "spool"
    rate, interval = 50.0, 1.0
    first = Driver(
        spool_dir=str(spool_dir),
        port=broker.port,
        count=100_000,
        rate=rate,
        variants=VARIANTS,
        batch_interval=interval,
    )
    assert first.wait(lambda d: len(d.subs) >= 330, 30)
    first.kill9()
    submitted = {(v, n) for v, n, _ in first.subs}
    rows = spooled_rows(spool_dir)
    kept = {(v, counter_of(json.loads(p))) for v, _, k, p in rows if k == "telegram"}
    lost = submitted - kept
    assert kept <= submitted
    # Everything but (at most) the last batch interval's telegrams is in the spool.
    assert len(lost) <= rate * len(VARIANTS) * interval * 1.5 + 10
    first_lost = min((n for _, n in lost), default=None)
    assert first_lost is None or all(n < first_lost for _, n in kept)
    print(
        f"\nkill -9 with broker down (batch {interval:.0f} s, {rate * len(VARIANTS):.0f} "
        f"telegrams/s): submitted {len(submitted)}, spooled {len(kept)}, lost {len(lost)} "
        "(all from the last, uncommitted batch)"
    )
