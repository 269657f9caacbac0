"""Session edges and prev_seq chains: the book and the router, without IO."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.publish import Reception, Router, Slot, SlotSchedule
from gateway.publish.schedule import datetime_to_ns
from gateway.publish.sessions import GAP_SEQ, Edge, SessionBook
from tests.publish.test_schedule import T0

NS = 1_000_000_000
LAG = 2 * NS
BASE = datetime_to_ns(T0)


def sched(*spans: tuple[str, int, int]) -> SlotSchedule:
    """A schedule from (holder, start s, end s) relative to T0."""
    return SlotSchedule(
        Slot(h, T0 + timedelta(seconds=a), T0 + timedelta(seconds=b)) for h, a, b in spans
    )


def at(seconds: float) -> int:
    """Wall ns at `seconds` after T0."""
    return BASE + round(seconds * NS)


def events(edges: list[Edge]) -> list[tuple[str, str]]:
    """(event, holder) of each edge."""
    return [(e.event, e.session.holder) for e in edges]


def receive(book: SessionBook, schedule: SlotSchedule, t: float, now: float) -> list[Edge]:
    """A reception at `t` routed at `now`, as the router advances the book for it."""
    wall = at(t)
    return book.advance(schedule, starts_to=wall, ends_to=min(wall, at(now) - LAG), now_ns=at(now))


def tick(book: SessionBook, schedule: SlotSchedule, now: float) -> list[Edge]:
    """The clock alone at `now` (as the router's advance_time: the lag late)."""
    return book.advance(schedule, starts_to=at(now) - LAG, ends_to=at(now) - LAG, now_ns=at(now))


HANDOVER = sched(("acme", 0, 10), ("bravo", 10, 20))


def test_handover_start_before_the_first_end_after_the_last() -> None:
    """bravo's start comes with its first reception; acme's end once the lag has passed."""
    book = SessionBook(end_lag_ns=LAG)
    assert events(receive(book, HANDOVER, 5, 5)) == [("start", "acme")]
    assert receive(book, HANDOVER, 9.9, 9.9) == []
    assert events(receive(book, HANDOVER, 10.0, 10.0)) == [("start", "bravo")]
    # acme's reception read at 9.95 but handed over after bravo's start: still acme's.
    assert receive(book, HANDOVER, 9.95, 10.5) == []
    assert book.session_for("acme", at(9.95)) is not None
    assert tick(book, HANDOVER, 11.0) == []  # within the lag
    [end] = tick(book, HANDOVER, 12.0)
    assert (end.event, end.session.holder, end.at_ns) == ("end", "acme", at(12.0))
    assert book.session_for("acme", at(9.95)) is None
    assert events(tick(book, HANDOVER, 22.0)) == [("end", "bravo")]
    assert book.open_sessions == ()


def test_back_to_back_slots_are_one_session_and_one_chain() -> None:
    """Two back-to-back slots of one holder: one start, one end, the chain runs on."""
    s = sched(("acme", 0, 10), ("acme", 10, 20))
    book = SessionBook(end_lag_ns=LAG)
    assert events(receive(book, s, 9, 9)) == [("start", "acme")]
    first = book.session_for("acme", at(9))
    assert book.link("acme", "v5", first, 1) is None
    assert receive(book, s, 11, 11) == [] and tick(book, s, 13) == []
    assert book.session_for("acme", at(11)) == first
    assert book.link("acme", "v5", first, 2) == 1
    [session] = book.open_sessions
    assert (session.start_ns, session.end_ns) == (at(0), at(20))


def test_a_holders_next_slot_closes_its_open_session_first() -> None:
    """acme's next slot starting inside the lag: acme's end, then acme's start."""
    s = sched(("acme", 0, 10), ("acme", 11, 20))
    book = SessionBook(end_lag_ns=LAG)
    receive(book, s, 5, 5)
    old = book.session_for("acme", at(5))
    book.link("acme", "v5", old, 7)
    assert events(receive(book, s, 11, 11)) == [("end", "acme"), ("start", "acme")]
    new = book.session_for("acme", at(11))
    assert new is not None and new != old
    assert book.link("acme", "v5", new, 8) is None  # a new session starts a new chain


def test_chains_are_per_holder_variant_and_session() -> None:
    """prev_seq: the previous seq of the same variant for the same holder in the session."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 1, 1)
    sid = book.session_for("acme", at(1))
    assert book.link("acme", "v5", sid, 1) is None
    assert book.link("acme", "v4", sid, 1) is None
    assert book.link("acme", "v5", sid, 2) == 1  # a telegram after an invalid or a telegram
    assert book.link("acme", "v5", sid, 5) == 2
    assert book.link("acme", "v4", sid, 3) == 1
    assert book.link("acme", "v5", None, 6) is None  # outside every session: no chain
    assert book.link("acme", "v5", sid, 7) == 5


def test_a_clean_restart_inside_a_slot_repeats_no_start_and_keeps_the_chains() -> None:
    """The state written with the last commit: no new start, prev_seq continues."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 1, 1)
    sid = book.session_for("acme", at(1))
    book.link("acme", "v5", sid, 41)
    state = book.snapshot()
    again = SessionBook(state, end_lag_ns=LAG)
    assert receive(again, HANDOVER, 3, 3) == []
    assert again.session_for("acme", at(3)) == sid
    assert again.link("acme", "v5", sid, 1001) == 41
    assert again.link("acme", "v4", sid, 1001) is None


def test_a_slot_that_ended_while_down_gets_its_end_late() -> None:
    """Restarted after acme's slot ended: acme's end now, then bravo's start."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 1, 1)
    again = SessionBook(book.snapshot(), end_lag_ns=LAG)
    edges = tick(again, HANDOVER, 15)
    assert events(edges) == [("end", "acme"), ("start", "bravo")]
    assert edges[0].at_ns == at(15)
    assert (edges[0].session.start_ns, edges[0].session.end_ns) == (at(0), at(10))


def test_slots_wholly_inside_a_downtime_get_no_markers() -> None:
    """A run that began and ended while no gateway ran: nothing for it."""
    s = sched(("acme", 0, 10), ("bravo", 10, 20), ("carol", 20, 30))
    book = SessionBook(end_lag_ns=LAG)
    receive(book, s, 1, 1)
    again = SessionBook(book.snapshot(), end_lag_ns=LAG)
    assert events(tick(again, s, 25)) == [("end", "acme"), ("start", "carol")]


def test_after_an_unclean_stop_each_chain_begins_at_the_gap_value() -> None:
    """kill -9 inside a slot: no new start; each chain's first prev_seq is GAP_SEQ, once."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 1, 1)
    sid = book.session_for("acme", at(1))
    book.link("acme", "v5", sid, 41)
    again = SessionBook(book.snapshot(), unclean=True, end_lag_ns=LAG)
    assert receive(again, HANDOVER, 3, 3) == []
    assert again.link("acme", "v5", sid, 1001) == GAP_SEQ
    assert again.link("acme", "v5", sid, 1002) == 1001
    assert again.link("acme", "v4", sid, 5) == GAP_SEQ  # a variant not seen before the stop
    # The mark survives a later clean restart for chains not yet continued.
    later = SessionBook(again.snapshot(), end_lag_ns=LAG)
    assert later.link("acme", "v3", sid, 9) == GAP_SEQ
    assert later.link("acme", "v5", sid, 1003) == 1002
    # A session opened after the unclean start starts its chains with None.
    assert events(receive(later, HANDOVER, 10, 10)) == [("start", "bravo")]
    bravo = later.session_for("bravo", at(10))
    assert later.link("bravo", "v5", bravo, 1004) is None


def test_a_reload_extends_cancels_or_starts_sessions_at_once() -> None:
    """Extended: the session goes on (its end moves); cancelled: its end now; a new slot
    holding the rig now: its start now."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 1, 1)
    sid = book.session_for("acme", at(1))
    book.link("acme", "v5", sid, 1)
    longer = sched(("acme", 0, 15), ("bravo", 15, 20))
    book.reschedule()
    assert tick(book, longer, 5) == []
    assert book.link("acme", "v5", book.session_for("acme", at(12)), 2) == 1
    [session] = book.open_sessions
    assert session.end_ns == at(15)
    book.reschedule()
    edges = tick(book, sched(("carol", 0, 20)), 6)
    assert events(edges) == [("end", "acme"), ("start", "carol")]
    assert edges[0].session.end_ns == at(15)  # the bounds the holder was last told
    book.reschedule()
    assert events(tick(book, sched(), 7)) == [("end", "carol")]


def test_a_reload_that_moves_an_end_into_the_past_ends_the_session() -> None:
    """A slot shortened to end before now (past the lag): its end at once."""
    book = SessionBook(end_lag_ns=LAG)
    receive(book, HANDOVER, 5, 5)
    book.reschedule()
    edges = tick(book, sched(("acme", 0, 6)), 9)
    assert events(edges) == [("end", "acme")]
    assert edges[0].session.end_ns == at(6)


def test_the_next_edge_due_by_the_clock() -> None:
    """next_due_ns: the lag after the next run's start or an open session's end."""
    s = sched(("acme", 5, 10))
    book = SessionBook(end_lag_ns=LAG)
    assert book.next_due_ns() is None  # nothing advanced yet
    assert tick(book, s, 1) == []
    assert book.next_due_ns() == at(5) + LAG
    assert events(tick(book, s, 7)) == [("start", "acme")]
    assert book.next_due_ns() == at(10) + LAG


def test_held_receptions_released_after_a_clock_sync_are_bracketed_by_their_own_times() -> None:
    """Unsynced across a handover: once synced, acme's held receptions, acme's end, bravo's
    start, bravo's receptions, in that order."""
    r: Router[int] = Router(HANDOVER, require_sync=True, sessions=SessionBook(end_lag_ns=LAG))
    mono0 = 1000 * NS  # mono at T0 (as learnt when the clock syncs)
    for i, t in enumerate([8.0, 9.0, 10.0, 11.0]):
        mono = mono0 + round(t * NS)
        assert (
            r.accept(Reception("v5", mono, 0, i), synced=False, now_mono_ns=mono, now_wall_ns=0)
            == []
        )
    mono_now = mono0 + 60 * NS
    routes = r.poll(synced=True, now_mono_ns=mono_now, now_wall_ns=at(60))
    stream: list[tuple[str, str | int | None]] = []
    for route in routes:
        stream += [(e.event, e.session.holder) for e in route.edges]
        stream.append(("msg", route.holder))
    assert stream == [
        ("start", "acme"),
        ("msg", "acme"),
        ("msg", "acme"),
        ("end", "acme"),
        ("start", "bravo"),
        ("msg", "bravo"),
        ("msg", "bravo"),
    ]
    assert events(r.advance_time(synced=True, now_mono_ns=mono_now, now_wall_ns=at(60))) == [
        ("end", "bravo")
    ]


def test_no_edges_while_the_clock_is_not_trusted() -> None:
    """advance_time gives nothing while unsynced (nor while receptions wait to be released)."""
    r: Router[int] = Router(HANDOVER, require_sync=True, sessions=SessionBook(end_lag_ns=LAG))
    assert r.advance_time(synced=False, now_mono_ns=1, now_wall_ns=at(5)) == []
    assert events(r.advance_time(synced=True, now_mono_ns=2, now_wall_ns=at(5))) == [
        ("start", "acme")
    ]


def test_a_reception_handed_over_later_than_the_lag_is_counted() -> None:
    """Routed after its session's end: counted as after_end, no chain."""
    r: Router[int] = Router(HANDOVER, require_sync=False, sessions=SessionBook(end_lag_ns=LAG))
    r.accept(Reception("v5", 0, at(5), 1), synced=True, now_mono_ns=0, now_wall_ns=at(5))
    r.advance_time(synced=True, now_mono_ns=0, now_wall_ns=at(13))  # acme's end went
    [route] = r.accept(Reception("v5", 0, at(9), 2), synced=True, now_mono_ns=0, now_wall_ns=at(13))
    assert route.holder == "acme" and route.session is None
    assert r.counters.after_end == 1


# --- the rules as a property: any schedule, any order of receptions and clock ticks ----------


@dataclass
class Seen:
    """What one holder's topics carried, in order."""

    stream: list[tuple[str, object]]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[SlotSchedule, list[tuple[str, float, float]]]:
    """A schedule of up to 6 slots for 3 holders (gaps and back-to-back ones), and a sequence
    of receptions (read in order, each handed over up to the lag later) and clock ticks."""
    spans = []
    t = 0
    for _ in range(draw(st.integers(0, 6))):
        t += draw(st.sampled_from([0, 0, 1, 3]))
        length = draw(st.integers(1, 6))
        spans.append((draw(st.sampled_from(["acme", "bravo", "carol"])), t, t + length))
        t += length
    steps = []
    clock = last_read = -2.0
    for _ in range(draw(st.integers(1, 60))):
        clock += draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5]))
        if draw(st.booleans()):
            # Read in order (one reader thread), handed over up to 1.9 s later (< the lag).
            last_read = read = max(last_read, clock - draw(st.floats(0, 1.9)))
            steps.append((draw(st.sampled_from(["v5", "v4"])), read, clock))
        else:
            steps.append(("tick", clock, clock))
    return sched(*spans), steps


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_holder_sees_its_messages_bracketed_and_chained(
    scenario: tuple[SlotSchedule, list[tuple[str, float, float]]],
) -> None:
    """Per holder: start, its messages, end (never interleaved otherwise); each message lies in
    its session's slot; prev_seq is the previous seq of its variant in the session."""
    schedule, steps = scenario
    router: Router[int] = Router(schedule, require_sync=False, sessions=SessionBook(end_lag_ns=LAG))
    seqs = iter(range(1, 10**6))
    per: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for kind, read, now in steps:
        if kind == "tick":
            edges = router.advance_time(synced=True, now_mono_ns=0, now_wall_ns=at(now))
            for e in edges:
                per[e.session.holder].append((e.event, e.session))
            continue
        reception = Reception(kind, 0, at(read), 0)
        [route] = router.accept(reception, synced=True, now_mono_ns=0, now_wall_ns=at(now))
        for e in route.edges:
            per[e.session.holder].append((e.event, e.session))
        if route.holder is not None:
            seq = next(seqs)
            prev = router.sessions.link(route.holder, kind, route.session, seq)
            per[route.holder].append(("msg", (kind, route.wall_ns, seq, prev, route.session)))
    assert router.counters.after_end == 0  # handed over within the lag: always bracketed
    for holder, stream in per.items():
        current = None
        last: dict[str, int] = {}
        for event, item in stream:
            if event == "start":
                assert current is None, f"{holder}: start inside a session"
                current, last = item, {}
            elif event == "end":
                assert current is not None and item == current, f"{holder}: end without start"
                current = None
            else:
                variant, wall, seq, prev, sid = item  # type: ignore[misc]
                assert current is not None, f"{holder}: a message outside its session"
                assert sid == current.id  # type: ignore[attr-defined]
                assert current.start_ns <= wall < current.end_ns  # type: ignore[attr-defined]
                assert prev == last.get(variant)
                last[variant] = seq


@settings(max_examples=200, deadline=None)
@given(scenarios(), scenarios(), st.lists(st.integers(0, 59), max_size=4))
def test_reloads_keep_every_holders_markers_paired_and_messages_inside(
    first: tuple[SlotSchedule, list[tuple[str, float, float]]],
    second: tuple[SlotSchedule, list[tuple[str, float, float]]],
    reloads: list[int],
) -> None:
    """Schedules swapped at any step: per holder, starts and ends still alternate, and every
    message routed into a session comes between that session's start and end."""
    schedules = [first[0], second[0]]
    router: Router[int] = Router(
        schedules[0], require_sync=False, sessions=SessionBook(end_lag_ns=LAG)
    )
    per: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for n, (kind, read, now) in enumerate(first[1]):
        if n in reloads:
            router.replace_schedule(schedules[(reloads.index(n) + 1) % 2])
        if kind == "tick" or n in reloads:
            for e in router.advance_time(synced=True, now_mono_ns=0, now_wall_ns=at(now)):
                per[e.session.holder].append((e.event, e.session.id))
        if kind == "tick":
            continue
        [route] = router.accept(
            Reception(kind, 0, at(read), 0), synced=True, now_mono_ns=0, now_wall_ns=at(now)
        )
        for e in route.edges:
            per[e.session.holder].append((e.event, e.session.id))
        if route.holder is not None and route.session is not None:
            per[route.holder].append(("msg", route.session))
    for holder, stream in per.items():
        current = None
        for event, sid in stream:
            if event == "start":
                assert current is None, f"{holder}: start inside a session"
                current = sid
            elif event == "end":
                assert current == sid, f"{holder}: end of a session not open"
                current = None
            else:
                assert current == sid, f"{holder}: a message outside its session"


def test_a_reception_of_the_earlier_run_after_one_of_the_next_is_counted() -> None:
    """One holder, two runs 1 s apart: a reception of the first handed over after one of the
    second (out of reading order) is routed after the first's end, and counted."""
    s = sched(("acme", 0, 10), ("acme", 11, 20))
    r: Router[int] = Router(s, require_sync=False, sessions=SessionBook(end_lag_ns=LAG))
    r.accept(Reception("v5", 0, at(9), 1), synced=True, now_mono_ns=0, now_wall_ns=at(9))
    [route] = r.accept(
        Reception("v5", 0, at(11), 2), synced=True, now_mono_ns=0, now_wall_ns=at(11)
    )
    assert events(list(route.edges)) == [("end", "acme"), ("start", "acme")]
    [late] = r.accept(
        Reception("v5", 0, at(9.5), 3), synced=True, now_mono_ns=0, now_wall_ns=at(11)
    )
    assert late.holder == "acme" and late.session is None and r.counters.after_end == 1
