"""The public health without IO: no host details, and counters since the current slot began."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from gateway.daemon.publichealth import (
    SLOT_COUNTERS_KEY,
    SlotCounters,
    next_edge_ns,
    public_health,
    run_at,
)
from gateway.mux import HealthCounters, PortHealth
from gateway.publish import Slot, SlotSchedule
from gateway.publish.schedule import datetime_to_ns
from gateway.timefmt import rfc3339_utc

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)
NS = datetime_to_ns(T0)
HOUR_NS = 3600 * 1_000_000_000
SCHEDULE = SlotSchedule(
    [
        Slot("acme", T0, T0 + H),
        Slot("acme", T0 + H, T0 + 2 * H),  # back to back: one run with the first
        Slot("beta", T0 + 2 * H, T0 + 3 * H),
        Slot("acme", T0 + 4 * H, T0 + 5 * H),
    ]
)


def counters(**kw: int) -> HealthCounters:
    """Lifetime counters with the given values, zero elsewhere."""
    return HealthCounters(**kw)


def test_a_run_is_a_holders_back_to_back_slots_and_edges_are_its_ends() -> None:
    """run_at finds the merged run; next_edge_ns the next start or end of one, none after."""
    assert run_at(SCHEDULE, NS - 1) is None
    assert run_at(SCHEDULE, NS + HOUR_NS + 5) == Slot("acme", T0, T0 + 2 * H)
    assert run_at(SCHEDULE, NS + 3 * HOUR_NS) is None
    assert next_edge_ns(SCHEDULE, NS - 1) == NS
    assert next_edge_ns(SCHEDULE, NS) == NS + 2 * HOUR_NS  # the slots' shared edge is no edge
    assert next_edge_ns(SCHEDULE, NS + 2 * HOUR_NS) == NS + 3 * HOUR_NS
    assert next_edge_ns(SCHEDULE, NS + 3 * HOUR_NS) == NS + 4 * HOUR_NS
    assert next_edge_ns(SCHEDULE, NS + 5 * HOUR_NS) is None


def test_slot_counters_restart_when_a_run_begins_and_run_on_within_it() -> None:
    """At a run's start every port's counters become its baseline; within the run they count
    on, across back-to-back slots; outside every slot there are none."""
    slots = SlotCounters()
    slots.observe(None, NS - 10, {"m1": counters(telegrams=5, crc_errors=3)})
    assert slots.since_slot_start("m1", counters(telegrams=5, crc_errors=3)) is None
    slots.observe(run_at(SCHEDULE, NS), NS, {"m1": counters(telegrams=7, crc_errors=3)})
    later = counters(telegrams=20, crc_errors=4, bytes_in=900)
    slots.observe(run_at(SCHEDULE, NS + HOUR_NS), NS + HOUR_NS, {"m1": later})
    since = slots.since_slot_start("m1", later)
    assert since is not None and since["since"] == rfc3339_utc(NS)
    assert (since["telegrams"], since["crc_errors"], since["bytes_in"]) == (13, 1, 900)
    beta = NS + 2 * HOUR_NS
    slots.observe(run_at(SCHEDULE, beta), beta, {"m1": later})
    again = slots.since_slot_start("m1", later)
    assert again is not None and again["since"] == rfc3339_utc(beta)
    assert {k: v for k, v in again.items() if k != "since"} == dict.fromkeys(
        (f.name for f in dataclasses.fields(HealthCounters)), 0
    )


def test_a_port_new_in_the_run_or_counted_afresh_counts_from_zero() -> None:
    """A port added during a run counts from zero, since it was first seen; a port whose
    counters went back (removed and added again) too; a removed port is forgotten."""
    slots = SlotCounters()
    run = run_at(SCHEDULE, NS)
    slots.observe(run, NS, {"m1": counters(telegrams=50)})
    slots.observe(run, NS + 5, {"m1": counters(telegrams=51), "m2": counters(telegrams=2)})
    new = slots.since_slot_start("m2", counters(telegrams=2))
    assert new is not None and (new["telegrams"], new["since"]) == (2, rfc3339_utc(NS + 5))
    slots.observe(run, NS + 9, {"m1": counters(telegrams=1)})
    again = slots.since_slot_start("m1", counters(telegrams=1))
    assert again is not None and (again["telegrams"], again["since"]) == (1, rfc3339_utc(NS + 9))
    gone = slots.since_slot_start("m2", counters(telegrams=4))  # forgotten: from the run's start
    assert gone is not None and (gone["telegrams"], gone["since"]) == (4, rfc3339_utc(NS))


def test_public_health_names_no_path_or_error_text_and_carries_the_slot_counters() -> None:
    """The payload a tester reads: the state, the fault category and both sets of counters,
    and nothing of the device path or the error text that names it."""
    path = "/dev/serial/by-path/platform-3f980000.usb-usb-0:1.3:1.0-port0"
    health = PortHealth("m1", url=path, spec="V5", now_ns=0)
    health.opened(0)
    health.telegram(crc_ok=False, raw=b"/x!0000\r\n", monotonic_ns=1, wall_ns=NS)
    health.lost(2, f"read failed: {path}: Input/output error (errno 5)", missing=True)
    snap = health.snapshot(3)
    slots = SlotCounters()
    slots.observe(run_at(SCHEDULE, NS), NS, {"m1": snap.counters})
    payload = public_health(snap, slots)
    assert path not in json.dumps(payload) and "port" not in payload
    assert (payload["state"], payload["error"], payload["crc_errors"]) == ("down", "unplugged", 1)
    assert payload[SLOT_COUNTERS_KEY]["crc_errors"] == 0
    assert public_health(snap, SlotCounters())[SLOT_COUNTERS_KEY] is None
