"""The router: route fixed at reception, clock trust, held receptions rebuilt from mono time."""

from __future__ import annotations

from datetime import timedelta

from gateway.publish import Reception, Router, Slot, SlotSchedule
from gateway.publish.schedule import datetime_to_ns
from tests.publish.test_schedule import T0

NS = 1_000_000_000
START = datetime_to_ns(T0)
HOUR = 3600 * NS
SCHED = SlotSchedule(
    [
        Slot("acme", T0, T0 + timedelta(hours=1)),
        Slot("bravo", T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
    ]
)


def rec(n: int, mono: int, wall: int) -> Reception[int]:
    """A reception carrying n."""
    return Reception("v5", mono, wall, n)


def test_synced_reception_goes_to_the_holder_of_its_wall_time() -> None:
    """The route is the holder at the reception wall time, not at routing time."""
    r: Router[int] = Router(SCHED, require_sync=True)
    r.poll(synced=True, now_mono_ns=0, now_wall_ns=0)  # the clock was seen synced from mono 0
    [route] = r.accept(
        rec(1, 10, START + 5), synced=True, now_mono_ns=10**12, now_wall_ns=START + 2 * HOUR
    )
    assert (route.holder, route.wall_ns, route.rebuilt) == ("acme", START + 5, False)
    [route] = r.accept(rec(2, 11, START + HOUR), synced=True, now_mono_ns=10**12, now_wall_ns=START)
    assert route.holder == "bravo"


def test_outside_every_slot_routes_to_nobody() -> None:
    """A reception outside every slot has no holder and is counted."""
    r: Router[int] = Router(SCHED)
    [route] = r.accept(rec(1, 1, START - 1), synced=True, now_mono_ns=1, now_wall_ns=START)
    assert route.holder is None
    assert r.counters.unrouted == 1 and r.counters.routed == 0


def test_unsynced_clock_holds_then_rebuilds_wall_time_from_mono() -> None:
    """Unsynced: nothing routed; synced: wall = mono + (wall_now - mono_now), in order."""
    r: Router[int] = Router(SCHED, require_sync=True)
    wrong = START + 5 * HOUR  # the unsynced clock's idea of now
    for i in range(3):
        assert (
            r.accept(
                rec(i, 100 * NS + i * NS, wrong + i * NS),
                synced=False,
                now_mono_ns=100 * NS + i * NS,
                now_wall_ns=wrong + i * NS,
            )
            == []
        )
    assert r.held == 3
    assert r.poll(synced=False, now_mono_ns=200 * NS, now_wall_ns=wrong) == []
    # Clock synced: mono 200 s is true wall START + 10 min.
    offset = START + 600 * NS - 200 * NS
    routes = r.poll(synced=True, now_mono_ns=200 * NS, now_wall_ns=200 * NS + offset)
    assert [x.reception.item for x in routes] == [0, 1, 2]
    assert [x.wall_ns for x in routes] == [100 * NS + i * NS + offset for i in range(3)]
    assert all(x.rebuilt and x.holder == "acme" for x in routes)
    assert r.held == 0 and r.counters.rebuilt == 3


def test_new_reception_after_sync_releases_held_ones_first() -> None:
    """accept() routes the held receptions before the new one, in reception order."""
    r: Router[int] = Router(SCHED, require_sync=True)
    r.accept(rec(1, NS, 0), synced=False, now_mono_ns=NS, now_wall_ns=0)
    routes = r.accept(
        rec(2, 3 * NS, START + 3 * NS), synced=True, now_mono_ns=3 * NS, now_wall_ns=START + 3 * NS
    )
    assert [x.reception.item for x in routes] == [1, 2]
    assert routes[0].wall_ns == START + NS and routes[0].rebuilt


def test_reception_before_the_first_synced_observation_is_rebuilt() -> None:
    """A reception whose wall time was read before sync was observed is not trusted as is."""
    r: Router[int] = Router(SCHED, require_sync=True)
    [route] = r.accept(
        rec(1, 5 * NS, 42), synced=True, now_mono_ns=6 * NS, now_wall_ns=START + 6 * NS
    )
    assert route.rebuilt and route.wall_ns == START + 5 * NS
    [route] = r.accept(
        rec(2, 7 * NS, START + 7 * NS + 3),
        synced=True,
        now_mono_ns=7 * NS,
        now_wall_ns=START + 7 * NS,
    )
    assert not route.rebuilt and route.wall_ns == START + 7 * NS + 3


def test_hold_is_bounded_and_drops_oldest() -> None:
    """Beyond max_held the oldest held reception is dropped and counted."""
    r: Router[int] = Router(SCHED, require_sync=True, max_held=2)
    for i in range(5):
        r.accept(rec(i, i, 0), synced=False, now_mono_ns=i, now_wall_ns=0)
    assert r.held == 2 and r.counters.held_dropped == 3 and r.counters.held == 5
    routes = r.poll(synced=True, now_mono_ns=10, now_wall_ns=START)
    assert [x.reception.item for x in routes] == [3, 4]


def test_without_require_sync_the_clock_is_not_consulted() -> None:
    """require_sync false: routed at once with the reception's own wall time."""
    r: Router[int] = Router(SCHED, require_sync=False)
    [route] = r.accept(rec(1, 1, START + 1), synced=False, now_mono_ns=1, now_wall_ns=0)
    assert route.holder == "acme" and not route.rebuilt


def test_replaced_schedule_applies_to_later_receptions() -> None:
    """A swapped schedule routes what is received after the swap."""
    r: Router[int] = Router(SCHED)
    r.replace_schedule(SlotSchedule([Slot("carol", T0, T0 + timedelta(hours=1))]))
    [route] = r.accept(rec(1, 1, START), synced=True, now_mono_ns=1, now_wall_ns=START)
    assert route.holder == "carol"
