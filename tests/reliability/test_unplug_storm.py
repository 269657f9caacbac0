"""An unplug storm: many unplug/replug cycles across ports while the others keep streaming.

Promise: the daemon stays up; a replugged port delivers again within 2 s; ports never
unplugged lose nothing; an unplugged port loses only what was on its line at the unplug (the
telegram being written) and a telegram begun before the port was reopened. While unplugged a
meter sends nothing at all: those telegrams never exist (the simulator gives them no number).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    first_received,
    models,
    record,
    soak_setting,
    wait_flowing,
)
from tests.support.mosquitto import wait_until

COMEBACK_S = 2.0


@dataclass
class Cycle:
    """One unplug and replug of one port."""

    variant: str
    unplugged_after: int
    """The meter's telegram count when it went down: the last one may have been cut."""
    unplug_ns: int
    plug_ns: int = 0
    back_at: float | None = None
    """When the tester got the first telegram sent after the replug (time.monotonic)."""


def storm(duration_s: float, *, meters: int = 5, stormy: int = 3, seed: int = 7) -> dict[str, Any]:
    """Unplug and replug the first `stormy` ports at random for `duration_s`; the figures."""
    rng = random.Random(seed)
    with FaultHarness(models(meters), rate=5.0) as h:
        tester = h.tester()
        ledger = Ledger(h, tester)
        assert wait_flowing(ledger, h.variants, 5, 60), h.log()[-3000:]
        first = first_received(ledger, h.variants)
        storm_ports, steady = h.variants[:stormy], h.variants[stormy:]
        cycles: list[Cycle] = []
        open_cycle: dict[str, Cycle] = {}
        # Each storm port alternates up (0.8-2.5 s) and down (0.1-1.5 s), out of step.
        due = {v: time.monotonic() + rng.uniform(0.0, 1.0) for v in storm_ports}
        end = time.monotonic() + duration_s
        while time.monotonic() < end or open_cycle:
            now = time.monotonic()
            for v in storm_ports:
                if now < due[v]:
                    continue
                meter = h.rig.meter(v)
                if v not in open_cycle:
                    if now >= end:
                        continue
                    meter.unplug(None)
                    assert wait_until(lambda m=meter: not m.stats().plugged, 5)
                    st = meter.stats()
                    assert st.last_unplug_monotonic_ns is not None
                    open_cycle[v] = Cycle(v, st.telegrams, st.last_unplug_monotonic_ns)
                    due[v] = now + rng.uniform(0.1, 1.5)
                else:
                    cycle = open_cycle.pop(v)
                    assert meter.stats().telegrams == cycle.unplugged_after, "sent while unplugged"
                    meter.replug()
                    assert wait_until(lambda m=meter: m.stats().plugged, 5)
                    cycle.plug_ns = meter.stats().last_plug_monotonic_ns or 0
                    cycles.append(cycle)
                    due[v] = now + rng.uniform(0.8, 2.5)
            assert h.alive(), h.log()[-3000:]
            ledger.update()
            _mark_comebacks(ledger, cycles)
            time.sleep(0.02)
        # Let the last replugs come back, then stop the meters and collect everything.
        wait_until(lambda: not _mark_comebacks(ledger.update(), cycles), 10)
        h.rig.pause()
        assert h.rig.wait_drained(10)
        last = {v: h.sent(v) for v in h.variants}
        excused = {v: _edge_telegrams(cycles, v) for v in h.variants}
        assert ledger.wait_all({v: (first[v], last[v]) for v in h.variants}, 60, excused)
        assert h.alive()
        accounts = {v: ledger.account(v, first[v], last[v]) for v in h.variants}
        for v in steady:
            assert accounts[v]["lost"] == 0, (v, accounts[v])
        for v in storm_ports:
            assert set(accounts[v]["missing"]) <= excused[v], (v, accounts[v], excused[v])
        for v, acc in accounts.items():
            assert acc["foreign"] == 0 and not acc["conflicts"], (v, acc)
            assert ledger.seq_follows_telegrams(v)
        _mark_comebacks(ledger, cycles)
        not_back = [c for c in cycles if c.back_at is None]
        assert not not_back, f"ports never delivered again: {not_back}"
        comebacks = sorted(c.back_at - c.plug_ns / 1e9 for c in cycles if c.back_at is not None)
        assert comebacks[-1] <= COMEBACK_S, f"slowest comeback {comebacks[-1]:.2f} s"
        assert wait_until(
            lambda: (
                all(p.get("state") == "up" for p in h.safe_status().get("ports", {}).values())
                and len(h.safe_status().get("ports", {})) == len(h.variants)
            ),
            15,
        )
        status = h.safe_status()
        tester.stop()
        cut = {
            v: sum(
                1 for c in cycles if c.variant == v and c.unplugged_after in accounts[v]["missing"]
            )
            for v in storm_ports
        }
        late = {
            v: sum(
                1
                for c in cycles
                if c.variant == v and c.unplugged_after + 1 in accounts[v]["missing"]
            )
            for v in storm_ports
        }
        return {
            "duration_s": duration_s,
            "cycles": len(cycles),
            "cycles_per_port": {v: sum(c.variant == v for c in cycles) for v in storm_ports},
            "steady_ports": {
                v: {k: accounts[v][k] for k in ("sent", "received", "lost")} for v in steady
            },
            "storm_ports": {
                v: {
                    "sent": accounts[v]["sent"],
                    "received": accounts[v]["received"],
                    "lost_cut_at_unplug": cut[v],
                    "lost_begun_before_reopen": late[v],
                }
                for v in storm_ports
            },
            "comeback_s": {
                "min": round(comebacks[0], 3),
                "median": round(comebacks[len(comebacks) // 2], 3),
                "max": round(comebacks[-1], 3),
            },
            "reconnects": {v: status["ports"][v].get("reconnects") for v in storm_ports},
            "duplicates": sum(a["raw_duplicates"] for a in accounts.values()),
            "rate_hz": h.rate,
        }


def _mark_comebacks(ledger: Ledger, cycles: list[Cycle]) -> list[Cycle]:
    """Note when each replugged port first delivered again; the cycles still waiting."""
    waiting = []
    for c in cycles:
        if c.back_at is None:
            later = [a.at for n, a in ledger[c.variant].by_sim.items() if n > c.unplugged_after]
            if later:
                c.back_at = min(later)
            else:
                waiting.append(c)
    return waiting


def _edge_telegrams(cycles: list[Cycle], variant: str) -> set[int]:
    """The telegrams a port may lose to its unplugs: the one on the line when it went down,
    and the next one, if the meter began it before the gateway had reopened the port."""
    out: set[int] = set()
    for c in cycles:
        if c.variant == variant:
            out |= {c.unplugged_after, c.unplugged_after + 1}
    return out


def test_unplug_storm_keeps_the_daemon_up_and_other_ports_whole() -> None:
    """~15 s of unplug/replug on 3 of 5 ports: steady ports lose nothing, all come back."""
    figures = storm(15.0)
    record("unplug_storm_quick", figures)
    assert figures["cycles"] >= 10


@pytest.mark.slow
def test_long_unplug_storm() -> None:
    """Soak: 2 minutes of unplug/replug cycles on 3 of 5 ports."""
    figures = storm(soak_setting("unplug_s", 120.0))
    record("unplug_storm_soak", figures)
    assert figures["cycles"] >= 100
