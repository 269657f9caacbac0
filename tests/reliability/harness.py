"""Fault-test tools: a gateway harness with a faster rig, a ledger of what a tester received,
the quick and soak sizes, and the report every fault test writes.

What was *sent* is what the simulator knows it wrote: each meter numbers its telegrams 1, 2, ...
(`MeterStats.telegrams`), telegrams not emitted (unplugged, nobody reading and the pty full)
take no number, and `meter.sequence_of(raw)` maps a received raw telegram back to its number.
What was *received* is what a tester with a persistent session got on the holder's topics,
deduplicated on (variant, seq), duplicates counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.sim.catalogue import MeterModel, catalogue
from gateway.sim.rig import VirtualRig
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MosquittoBroker, MqttProbe, wait_until

#: The rig's 1-second meters (DSMR 5 and e-MUCS), the kinds a fault test drives fastest.
ONE_SECOND_METERS = (
    "fluvius-t211",
    "iskra-am550-dsmr50",
    "fluvius-s211",
    "sagemcom-t210-at",
    "iskra-ie5-be",
)
SOAK = os.environ.get("P1GW_SLOW") == "1"


def models(count: int) -> list[MeterModel]:
    """The first `count` one-second meter models."""
    cat = catalogue()
    return [cat[name] for name in ONE_SECOND_METERS[:count]]


def soak_setting(name: str, default: float) -> float:
    """A soak size from the environment (`P1GW_SOAK_<NAME>`), else `default`."""
    value = os.environ.get(f"P1GW_SOAK_{name.upper()}")
    return float(value) if value else default


# --- the report -------------------------------------------------------------------------------


def record(name: str, figures: dict[str, Any]) -> None:
    """Print a fault test's figures and merge them into $P1GW_RELIABILITY_REPORT (if set)."""
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
    print(f"\n[reliability] {name}: {json.dumps(entry, sort_keys=True)}")
    target = os.environ.get("P1GW_RELIABILITY_REPORT")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
        data[name] = entry
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


# --- the harness ------------------------------------------------------------------------------


class FaultHarness(GatewayHarness):
    """GatewayHarness with the rig's rate, pacing and the spool's batch interval chosen."""

    def __init__(
        self,
        meter_models: Iterable[MeterModel],
        *,
        rate: float | None = 5.0,
        line_pacing: bool = True,
        batch_interval: float = 0.2,
    ) -> None:
        super().__init__(meter_models, batch_interval=batch_interval)
        self.rig = VirtualRig(
            self.models, link_dir=self.dir / "ports", rate=rate, line_pacing=line_pacing
        )
        self.rate = rate
        self.variants = [m.id for m in self.models]

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Is the daemon process running?"""
        return self.proc is not None and self.proc.poll() is None

    def tester(self, holder: str = "acme") -> MqttProbe:
        """A tester with a persistent session on the holder's slot topics."""
        return self.probe(holder, [f"p1/{RIG_ID}/slot/{holder}/#"], persistent=True)

    def safe_status(self) -> dict[str, Any]:
        """The status file, or {} while it is being replaced or not yet written."""
        try:
            return self.status()
        except (OSError, ValueError):
            return {}

    def sent(self, variant: str) -> int:
        """How many telegrams the variant's meter has put on its line so far."""
        return self.rig.meter(variant).stats().telegrams

    def spool_path(self) -> Path:
        """The daemon's SQLite spool."""
        return self.dir / "spool" / "spool.sqlite3"

    def memory_kb(self) -> dict[str, int]:
        """The daemon's VmRSS and VmHWM (peak RSS) in kB, from /proc/PID/status."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out


def spooled_rows(spool: Path) -> list[tuple[str, int, str, bytes]]:
    """(variant, seq, kind, payload) of every row left in a spool, read from outside."""
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT variant, seq, kind, payload FROM spool ORDER BY id")
        return [(v, int(s), k, bytes(p)) for v, s, k, p in rows]
    finally:
        db.close()


# --- what the tester received -----------------------------------------------------------------


@dataclass
class Arrival:
    """The first arrival of one telegram's raw message."""

    gw_seq: int
    sim_seq: int | None
    at: float
    digest: int


@dataclass
class VariantLedger:
    """What one variant's telegrams did on the way to the tester."""

    by_gw: dict[int, Arrival] = field(default_factory=dict)
    by_sim: dict[int, Arrival] = field(default_factory=dict)
    arrival_order: list[int] = field(default_factory=list)
    raw_duplicates: int = 0
    telegram_seqs: set[int] = field(default_factory=set)
    telegram_duplicates: int = 0
    foreign: int = 0
    """Raw payloads the simulator does not know as its own."""
    conflicts: list[str] = field(default_factory=list)
    """Same seq with other bytes, or one telegram under two seqs."""
    invalid: int = 0

    def max_sim(self) -> int:
        """The highest simulator number received (0 if none)."""
        return max(self.by_sim, default=0)


class Ledger:
    """Reads a tester's messages as they come: per variant, raw and telegram, deduplicated."""

    def __init__(self, harness: FaultHarness, probe: MqttProbe, holder: str = "acme") -> None:
        self.harness = harness
        self.probe = probe
        self.prefix = f"p1/{RIG_ID}/slot/{holder}/"
        self.variants: dict[str, VariantLedger] = {v: VariantLedger() for v in harness.variants}
        self.other_topics = 0
        self._seen = 0

    def update(self) -> Ledger:
        """Take in the messages received since the last call."""
        messages = self.probe.snapshot()
        for msg in messages[self._seen :]:
            self._take(msg.topic, msg.payload, msg.at, msg.prop("seq"))
        self._seen = len(messages)
        return self

    def _take(self, topic: str, payload: bytes, at: float, seq_prop: str | None) -> None:
        """One message."""
        if not topic.startswith(self.prefix):
            self.other_topics += 1
            return
        variant, _, kind = topic[len(self.prefix) :].partition("/")
        led = self.variants.setdefault(variant, VariantLedger())
        if kind == "telegram":
            seq = int(json.loads(payload)["seq"])
            if seq in led.telegram_seqs:
                led.telegram_duplicates += 1
            led.telegram_seqs.add(seq)
        elif kind == "invalid":
            led.invalid += 1
        elif kind == "raw":
            assert seq_prop is not None, "raw message without the seq user property (MQTT 5)"
            seq, digest = int(seq_prop), hash(payload)
            old = led.by_gw.get(seq)
            if old is not None:
                led.raw_duplicates += 1
                if old.digest != digest:
                    led.conflicts.append(f"seq {seq} redelivered with other bytes")
                return
            meter = self.harness.rig.meters.get(variant)
            sim = meter.sequence_of(payload) if meter is not None else None
            arrival = Arrival(seq, sim, at, digest)
            led.by_gw[seq] = arrival
            led.arrival_order.append(seq)
            if sim is None:
                led.foreign += 1
            elif sim in led.by_sim:
                first_seq = led.by_sim[sim].gw_seq
                led.conflicts.append(f"telegram {sim} published as seq {first_seq} and {seq}")
            else:
                led.by_sim[sim] = arrival

    def __getitem__(self, variant: str) -> VariantLedger:
        return self.variants[variant]

    def has_all(self, variant: str, first: int, last: int, excused: Iterable[int] = ()) -> bool:
        """Whether every telegram first..last (but the excused) has arrived."""
        got, skip = self.variants[variant].by_sim, set(excused)
        return all(n in got or n in skip for n in range(first, last + 1))

    def wait_all(
        self,
        wanted: dict[str, tuple[int, int]],
        timeout: float,
        excused: dict[str, set[int]] | None = None,
    ) -> bool:
        """Wait until every variant has every telegram in its (first, last) range."""
        excused = excused or {}

        def complete() -> bool:
            self.update()
            return all(self.has_all(v, a, b, excused.get(v, set())) for v, (a, b) in wanted.items())

        return wait_until(complete, timeout, 0.1)

    def first_arrivals_in_order(self, variant: str) -> bool:
        """Per variant, first arrivals come in increasing seq order."""
        order = self.variants[variant].arrival_order
        return order == sorted(order)

    def seq_follows_telegrams(self, variant: str) -> bool:
        """A later telegram never has a lower (or the same) seq: seqs are never reused."""
        led = self.variants[variant]
        seqs = [led.by_sim[n].gw_seq for n in sorted(led.by_sim)]
        return all(a < b for a, b in itertools.pairwise(seqs))

    def account(self, variant: str, first: int, last: int) -> dict[str, Any]:
        """Sent (the simulator's first..last), received distinct, duplicates, missing."""
        led = self.variants[variant]
        got = {n for n in led.by_sim if first <= n <= last}
        missing = sorted(set(range(first, last + 1)) - got)
        return {
            "sent": last - first + 1,
            "first": first,
            "last": last,
            "received": len(got),
            "raw_duplicates": led.raw_duplicates,
            "telegram_duplicates": led.telegram_duplicates,
            "missing": missing,
            "lost": len(missing),
            "foreign": led.foreign,
            "conflicts": list(led.conflicts),
        }

    def telegram_twins_complete(self, variant: str) -> bool:
        """Every raw message has its decoded telegram twin with the same seq, and vice versa."""
        led = self.variants[variant]
        return set(led.by_gw) == led.telegram_seqs


def wait_flowing(ledger: Ledger, variants: Sequence[str], count: int, timeout: float) -> bool:
    """Wait until each variant has at least `count` telegrams at the tester."""

    def enough() -> bool:
        ledger.update()
        return all(len(ledger[v].by_sim) >= count for v in variants)

    return wait_until(enough, timeout, 0.05)


def first_received(ledger: Ledger, variants: Iterable[str]) -> dict[str, int]:
    """Each variant's lowest simulator number received: where its accounting starts."""
    ledger.update()
    return {v: min(ledger[v].by_sim) for v in variants}


# --- broker faults ----------------------------------------------------------------------------

_SAVED = re.compile(r"Saving in-memory database")


def save_broker_state(broker: MosquittoBroker, timeout: float = 15.0) -> bool:
    """SIGUSR1: mosquitto writes its persistence file now (the testers' sessions included)."""
    assert broker.proc is not None
    before = len(_SAVED.findall(broker.log()))
    broker.proc.send_signal(signal.SIGUSR1)
    return wait_until(lambda: len(_SAVED.findall(broker.log())) > before, timeout)


def wait_quiet(harness: FaultHarness, ledger: Ledger, timeout: float = 30.0) -> bool:
    """Wait until the tester has every telegram the meters have emitted: nothing in flight."""

    def caught_up() -> bool:
        ledger.update()
        return all(ledger[v].max_sim() >= harness.sent(v) for v in harness.variants)

    return wait_until(caught_up, timeout, 0.005)


def crash_broker(harness: FaultHarness, ledger: Ledger, broker: MosquittoBroker) -> dict[str, Any]:
    """SIGKILL the broker at a quiet moment, its sessions saved just before (SIGUSR1).

    A broker that dies between acknowledging a message and delivering it loses that message:
    that is the broker's durability, not the gateway's. Killing it when the tester has every
    telegram the meters emitted keeps the test about the gateway's promise. A telegram emitted
    in the instant between that check and the kill cannot have been published yet (its bytes
    take ~80 ms on the line), so none is excused.
    """
    assert save_broker_state(broker), broker.log()[-2000:]
    assert wait_quiet(harness, ledger), "the tester never caught up with the meters"
    broker.kill()
    return {"how": "SIGKILL at a quiet moment (state saved by SIGUSR1 first)"}


def stop_broker(broker: MosquittoBroker) -> dict[str, Any]:
    """SIGTERM the broker mid-stream: it saves its sessions and queued messages, then exits."""
    broker.terminate()
    return {"how": "SIGTERM mid-stream"}


def elapsed(start: float) -> float:
    """Seconds since `start` (time.monotonic), rounded for reports."""
    return round(time.monotonic() - start, 2)


def counted(items: Iterable[str]) -> dict[str, int]:
    """A Counter as a plain dict."""
    return dict(Counter(items))
