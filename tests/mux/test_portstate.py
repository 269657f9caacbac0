"""A port's life without IO: the pure `PortState`, driven by the test's own clock.

Every happening is told with its time, and every decision (events, reopen and presence-check
times, visits, parking, silence) is read back through the public methods; the multiplexer on
real ptys is tested in test_mux.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gateway import corpus
from gateway.mux import (
    FaultKind,
    FrameDropped,
    FrameEnd,
    FrameReceived,
    HealthState,
    MuxEvent,
    PortClosed,
    PortConfig,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
)
from gateway.mux.coalesce import MIN_SAMPLES, byte_time_ns
from gateway.mux.portstate import Phase, PortState, Timings, Visit
from gateway.p1 import Framer, FramerEvent

S = 1_000_000_000
MS = 1_000_000
T0 = 1_000 * S
"""The tests' start: on both presence grids."""
WALL0 = 1_790_000_000 * S
TIMINGS = Timings()
BYTE_NS = byte_time_ns(115200, 8, "N", 1)

V5 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5_TWO_MBUS").read()
BAD_CRC = V5.replace(b"0-0:1.0.0(", b"0-0:1.0.0(9", 1)


def _port(url: str = "/dev/ttyUSB0", timings: Timings = TIMINGS, **kw: Any) -> PortState:
    """A configured, idle port for variant m1."""
    return PortState(PortConfig("m1", url, **kw), timings, T0)


def _open(port: PortState, now: int, *, polled: bool = False) -> list[MuxEvent]:
    """Begin an open and have it succeed at `now`."""
    port.begin_open()
    return port.opened(now, WALL0 + now, request_line_held=None, polled=polled)


def _fail(
    port: PortState, now: int, error: str = "busy", *, missing: bool = False
) -> list[MuxEvent]:
    """Begin an open and have it fail at `now`."""
    port.begin_open()
    return port.open_failed(now, WALL0 + now, error, missing=missing)


def _read(port: PortState, data: bytes, now: int) -> list[MuxEvent]:
    """One read on readiness at `now`; the events it makes."""
    return list(port.received(data, now, WALL0 + now).events)


# --- opening --------------------------------------------------------------------------------------


def test_a_new_port_is_idle_and_down_until_an_open_succeeds() -> None:
    """Idle and down with nothing to visit; opening reports the profile and makes it up."""
    port = _port(request_line="rts")
    assert port.phase is Phase.IDLE and port.wakeup_ns() is None
    assert port.snapshot(T0).state is HealthState.DOWN
    generation = port.begin_open()
    assert port.phase is Phase.OPENING and port.expects(generation)
    assert port.wakeup_ns() is None  # an open in flight is the pool's business
    (opened,) = port.opened(T0 + 5 * MS, WALL0, request_line_held=False, polled=False)
    assert opened == PortOpened(
        "m1", "/dev/ttyUSB0", "115200 8N1", "rts", False, False, T0 + 5 * MS, WALL0
    )
    assert port.phase is Phase.OPEN and port.wakeup_ns() is None
    assert port.snapshot(T0 + 5 * MS).state is HealthState.UP


def test_an_open_result_is_stale_once_the_port_was_closed_or_reopened() -> None:
    """Only the latest attempt's result is expected: closing or a new attempt makes it stale."""
    port = _port()
    first = port.begin_open()
    port.closed(T0, WALL0, "changed")
    assert not port.expects(first)
    second = port.begin_open()
    assert port.expects(second) and not port.expects(first)
    port.open_failed(T0, WALL0, "busy", missing=False)
    assert not port.expects(second)  # answered: nothing more is expected


def test_happenings_that_cannot_come_in_a_phase_are_refused() -> None:
    """A loop bug (opened while idle, lost while not open, reopening an open port) raises."""
    port = _port()
    with pytest.raises(RuntimeError):
        port.opened(T0, WALL0, request_line_held=None, polled=False)
    with pytest.raises(RuntimeError):
        port.lost(T0, WALL0, "gone", missing=False)
    _open(port, T0)
    with pytest.raises(RuntimeError):
        port.begin_open()
    with pytest.raises(RuntimeError):
        port.reconfigure(PortConfig("m1", "/dev/ttyUSB1"))


# --- reopening: backoff and presence --------------------------------------------------------------


def test_failures_back_off_doubling_to_a_second_and_are_reported_when_they_change() -> None:
    """0.1, 0.2, 0.4, 0.8, 1, 1 s; the first failure and each new error are reported, repeats
    of the same error are not (but counted)."""
    port = _port()
    now = T0
    delays, reported = [], []
    for error in ["busy", "busy", "busy", "denied", "denied", "busy"]:
        events = _fail(port, now, error)
        assert all(isinstance(e, PortOpenFailed) for e in events)
        reported.extend((e.attempts, e.error, e.retry_in_s) for e in events)
        due = port.wakeup_ns()
        assert due is not None
        delays.append(due - now)
        assert port.visit(due - 1) is Visit.NOTHING
        assert port.visit(due) is Visit.OPEN
        now = due
    assert delays == [100 * MS, 200 * MS, 400 * MS, 800 * MS, S, S]
    assert reported == [(1, "busy", 0.1), (4, "denied", 0.8), (6, "busy", 1.0)]
    snap = port.snapshot(now)
    assert snap.state is HealthState.DOWN and snap.counters.open_failures == 6
    assert snap.last_error == "busy"


def test_a_missing_path_is_watched_on_the_shared_grid_not_retried() -> None:
    """While the path is missing the port is never reopened on a timer: its presence is checked
    at every 50 ms point of the grid, whatever the time it went missing."""
    port = _port()
    (failed,) = _fail(port, T0 + 7 * MS, "No such file", missing=True)
    assert isinstance(failed, PortOpenFailed) and failed.retry_in_s == 0.05
    assert port.next_presence_check_ns() == port.wakeup_ns() == T0 + 50 * MS
    visits = []
    for now in range(T0 + 10 * MS, T0 + 2 * S, 10 * MS):
        visits.append((now, port.visit(now)))
    assert all(v is not Visit.OPEN for _, v in visits)
    checks = [now for now, v in visits if v is Visit.CHECK_PRESENCE]
    assert checks == list(range(T0 + 50 * MS, T0 + 2 * S, 50 * MS))
    port.begin_open()  # the loop found the path there
    assert port.next_presence_check_ns() is None


def test_a_path_missing_for_long_is_checked_on_the_slow_grid_and_fast_again_after_a_loss() -> None:
    """After 30 s missing, every 0.5 s (on grid points); reopened and lost, every 50 ms again,
    counted from the new loss; the failure is reported once, with the fast interval."""
    port = _port()
    (failed,) = _fail(port, T0, "No such file", missing=True)
    assert isinstance(failed, PortOpenFailed) and failed.retry_in_s == 0.05
    assert port.visit(T0 + 29_990 * MS) is Visit.CHECK_PRESENCE
    assert port.next_presence_check_ns() == T0 + 30_000 * MS
    assert port.visit(T0 + 30_000 * MS) is Visit.CHECK_PRESENCE  # missing 30 s: slow from now
    assert port.next_presence_check_ns() == T0 + 30_500 * MS
    port.begin_open()  # found at the slow check, but gone again when opened: still missing
    assert port.open_failed(T0 + 30_500 * MS, WALL0, "No such file", missing=True) == []
    assert port.next_presence_check_ns() == T0 + 31_000 * MS
    _open(port, T0 + 31_000 * MS)
    (lost,) = port.lost(T0 + 31_020 * MS, WALL0, "device disconnected", missing=True)
    assert isinstance(lost, PortLost)
    assert port.next_presence_check_ns() == T0 + 31_050 * MS


@settings(max_examples=200, deadline=None)
@given(
    failed_at=st.integers(0, 10**12),
    steps=st.lists(st.integers(1, 3 * S), min_size=1, max_size=40),
)
def test_presence_checks_are_on_grid_points_just_ahead(failed_at: int, steps: list[int]) -> None:
    """Whenever a missing port was found missing, each check is scheduled at the next point of
    the fast grid (of the slow one after 30 s), so every missing port wakes the loop together."""
    port = _port()
    _fail(port, failed_at, "No such file", missing=True)
    now = failed_at
    previous = port.next_presence_check_ns()
    for step in steps:
        now += step
        visit = port.visit(now)
        nxt = port.next_presence_check_ns()
        assert nxt is not None and nxt > now
        if visit is Visit.CHECK_PRESENCE:
            slow = now - failed_at >= TIMINGS.presence_slow_after_ns
            interval = TIMINGS.presence_slow_ns if slow else TIMINGS.presence_ns
            assert nxt % interval == 0 and nxt <= now + interval
        else:
            assert visit is Visit.NOTHING and nxt == previous
        previous = nxt


def test_a_path_that_is_there_but_fails_is_retried_on_the_backoff() -> None:
    """A failure with the path there (ENXIO) after it was missing: back on the reopen delay."""
    port = _port()
    _fail(port, T0, "No such file", missing=True)
    (failed,) = _fail(port, T0 + 50 * MS, "No such device", missing=False)
    assert isinstance(failed, PortOpenFailed) and failed.retry_in_s == 0.2
    assert port.next_presence_check_ns() is None
    assert port.wakeup_ns() == T0 + 250 * MS


def test_timings_put_the_slow_grid_on_the_fast_one() -> None:
    """The slow presence interval is rounded to a whole number of fast ones."""
    timings = Timings.of(
        reopen_initial_s=0.1,
        reopen_max_s=1.0,
        poll_interval_s=0.02,
        presence_check_s=0.05,
        presence_slow_s=0.52,
        presence_slow_after_s=30.0,
        coalesce=False,
        coalesce_guard_s=0.003,
    )
    assert timings.presence_slow_ns == 10 * timings.presence_ns
    assert timings.coalesce_guard_ns is None


# --- loss, closing, changes -----------------------------------------------------------------------


def test_a_lost_port_truncates_its_partial_frame_and_reconnects_after_the_first_delay() -> None:
    """Lost mid-frame: the partial frame is dropped as truncated, then PortLost; reopened after
    0.1 s whatever failures came before, and the reopening says it is a reconnect."""
    port = _port()
    _fail(port, T0)
    _fail(port, T0 + 100 * MS)
    _open(port, T0 + 300 * MS)
    _read(port, V5[:200], T0 + 400 * MS)
    dropped, lost = port.lost(T0 + 500 * MS, WALL0, "end of file", missing=False)
    assert dropped == FrameDropped(
        "m1", "truncated", 200, T0 + 400 * MS, WALL0 + T0 + 400 * MS, V5[:200], FrameEnd.PORT_LOST
    )
    assert lost == PortLost("m1", "/dev/ttyUSB0", "end of file", T0 + 500 * MS, WALL0)
    assert port.pending == 0 and port.phase is Phase.WAITING
    assert port.wakeup_ns() == T0 + 600 * MS
    (opened,) = _open(port, T0 + 600 * MS)
    assert isinstance(opened, PortOpened) and opened.reconnect is True
    counters = port.snapshot(T0 + 600 * MS).counters
    assert (counters.truncated, counters.reconnects) == (1, 1)


def test_closing_reports_only_an_open_port_and_stops_all_visits() -> None:
    """Closed while open: its partial frame, then PortClosed; closed while waiting: nothing."""
    port = _port()
    _open(port, T0)
    _read(port, V5[:10], T0)
    assert port.closed(T0 + S, WALL0, "stopped") == [
        FrameDropped("m1", "truncated", 10, T0, WALL0 + T0, V5[:10], FrameEnd.PORT_CLOSED),
        PortClosed("m1", "/dev/ttyUSB0", "stopped", T0 + S, WALL0),
    ]
    waiting = _port()
    _fail(waiting, T0)
    assert waiting.closed(T0, WALL0, "removed") == []
    assert waiting.phase is Phase.IDLE and waiting.wakeup_ns() is None
    assert waiting.visit(T0 + 10 * S) is Visit.NOTHING


def test_a_changed_configuration_starts_its_failures_afresh_and_keeps_the_counters() -> None:
    """Reconfigured after closing: a new interval and url, counters kept, the next failure is
    the first again (reported, attempt 1)."""
    port = _port(spec="V5")
    _fail(port, T0, "busy")
    _fail(port, T0 + 100 * MS, "busy")
    port.closed(T0 + 150 * MS, WALL0, "changed")
    port.reconfigure(PortConfig("m1", "/dev/ttyUSB1", spec="V5", interval_s=2.0))
    (failed,) = _fail(port, T0 + 200 * MS, "busy")
    assert isinstance(failed, PortOpenFailed)
    assert (failed.url, failed.attempts, failed.retry_in_s) == ("/dev/ttyUSB1", 1, 0.1)
    snap = port.snapshot(T0 + 200 * MS)
    assert snap.expected_interval_s == 2.0 and snap.counters.open_failures == 3


# --- traffic --------------------------------------------------------------------------------------


def test_a_frame_is_received_at_the_read_of_its_last_byte() -> None:
    """Two reads make one frame, timed by the second; every read is counted, even an empty one."""
    port = _port(spec="V5")
    _open(port, T0)
    assert _read(port, V5[:300], T0 + 10 * MS) == []
    assert port.pending == 300
    (frame,) = _read(port, V5[300:], T0 + 90 * MS)
    assert isinstance(frame, FrameReceived)
    assert frame.frame.raw == V5 and frame.frame.crc_ok is True
    assert (frame.received_monotonic_ns, frame.received_wall_ns) == (
        T0 + 90 * MS,
        WALL0 + T0 + 90 * MS,
    )
    assert port.received(b"", 0, 0).events == ()
    counters = port.snapshot(T0 + 90 * MS).counters
    assert (counters.reads, counters.bytes_in, counters.telegrams) == (3, len(V5), 1)


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(1, 3 * len(V5) - 1), max_size=12, unique=True))
def test_however_the_bytes_come_the_same_frames_are_received(cuts: list[int]) -> None:
    """Three telegrams (one with a bad CRC) read in any pieces: the same three frames."""
    stream = V5 + BAD_CRC + V5
    port = _port(spec="V5")
    _open(port, T0)
    bounds = [0, *sorted(cuts), len(stream)]
    events: list[MuxEvent] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        events += _read(port, stream[a:b], T0 + i * MS)
    frames = [e for e in events if isinstance(e, FrameReceived)]
    assert [(f.frame.raw, f.frame.crc_ok) for f in frames] == [
        (V5, True),
        (BAD_CRC, False),
        (V5, True),
    ]
    assert len(events) == 3
    counters = port.snapshot(T0).counters
    assert (counters.telegrams, counters.crc_errors, counters.reads) == (2, 1, len(bounds) - 1)


def test_silence_after_three_intervals_and_up_again_with_a_telegram() -> None:
    """Silent when 3 intervals pass without a valid telegram (a bad CRC does not count); the
    next valid one brings PortUp before its frame."""
    port = _port(spec="V5")
    _open(port, T0)
    _read(port, V5, T0 + S)
    assert port.silent_due_ns() == T0 + 4 * S
    assert port.tick(T0 + 4 * S - 1, WALL0) is None
    _read(port, BAD_CRC, T0 + 2 * S)
    silent = port.tick(T0 + 4 * S, WALL0)
    assert silent == PortSilent("m1", 3.0, 1.0, T0 + 4 * S, WALL0)
    assert port.silent_due_ns() is None and port.tick(T0 + 9 * S, WALL0) is None
    up, frame = _read(port, V5, T0 + 10 * S)
    assert up == PortUp("m1", T0 + 10 * S, WALL0 + T0 + 10 * S)
    assert isinstance(frame, FrameReceived)
    assert port.snapshot(T0 + 10 * S).state is HealthState.UP


def test_a_frame_cut_by_a_new_slash_is_received_at_the_read_of_its_last_byte() -> None:
    """Cut short by the '/' that opens the next read: received at the read before; cut inside
    a read: at that read. Its bytes come along, and it counts as truncated."""
    port = _port(spec="V5")
    _open(port, T0)
    _read(port, V5[:300], T0 + 10 * MS)
    dropped, frame = _read(port, V5, T0 + 900 * MS)
    assert dropped == FrameDropped(
        "m1", "truncated", 300, T0 + 10 * MS, WALL0 + T0 + 10 * MS, V5[:300], FrameEnd.NEXT_FRAME
    )
    assert isinstance(frame, FrameReceived) and frame.received_monotonic_ns == T0 + 900 * MS
    _read(port, V5[:300], T0 + S)
    (dropped,) = _read(port, V5[300:400] + V5[:5], T0 + S + 10 * MS)
    assert isinstance(dropped, FrameDropped) and dropped.raw == V5[:400]
    assert dropped.received_monotonic_ns == T0 + S + 10 * MS
    assert port.snapshot(T0 + S).counters.truncated == 2


def test_a_quiet_line_inside_a_frame_cuts_it_short_after_truncate_after_s() -> None:
    """No byte for truncate_after_s (1 s, or as configured) inside a frame: `expire` cuts it,
    received at the read of its last byte; a byte meanwhile moves the deadline on."""
    port = _port(spec="V5")
    _open(port, T0)
    assert port.quiet_due_ns() is None
    _read(port, V5[:300], T0 + 10 * MS)
    assert port.quiet_due_ns() == T0 + 10 * MS + S
    _read(port, V5[300:400], T0 + 500 * MS)
    assert port.quiet_due_ns() == T0 + 1500 * MS
    assert port.expire(T0 + 1500 * MS - 1) == []
    (dropped,) = port.expire(T0 + 1500 * MS)
    assert dropped == FrameDropped(
        "m1", "truncated", 400, T0 + 500 * MS, WALL0 + T0 + 500 * MS, V5[:400], FrameEnd.QUIET_LINE
    )
    assert port.quiet_due_ns() is None and port.expire(T0 + 9 * S) == []
    (frame,) = _read(port, V5, T0 + 2 * S)
    assert isinstance(frame, FrameReceived)
    assert port.snapshot(T0 + 2 * S).counters.truncated == 1
    short = _port(spec="V5", truncate_after_s=0.25)
    _open(short, T0)
    _read(short, V5[:300], T0)
    assert short.quiet_due_ns() == T0 + 250 * MS
    assert [type(e) for e in short.expire(T0 + 250 * MS)] == [FrameDropped]


def test_an_oversize_frame_is_reported_where_it_ends_with_its_first_bytes() -> None:
    """Over max_frame_size: dropped at the next '/' with the bound's worth of bytes and its
    whole length, or where a quiet line ends it."""
    bound = len(V5) + 10
    port = _port(spec="V5", max_frame_size=bound)
    _open(port, T0)
    run = b"/" + b"x" * (3 * bound)
    assert _read(port, run, T0) == []
    assert port.quiet_due_ns() == T0 + S
    dropped, frame = _read(port, V5, T0 + 100 * MS)
    assert dropped == FrameDropped(
        "m1", "oversize", len(run), T0, WALL0 + T0, run[:bound], FrameEnd.NEXT_FRAME
    )
    assert isinstance(frame, FrameReceived)
    _read(port, run, T0 + S)
    (dropped,) = port.expire(T0 + 2 * S)
    assert isinstance(dropped, FrameDropped)
    assert (dropped.reason, dropped.size) == ("oversize", len(run))
    assert dropped.ended_by is FrameEnd.QUIET_LINE
    assert port.snapshot(T0 + 2 * S).counters.oversize == 2


def test_a_down_port_says_why_as_a_category() -> None:
    """Path missing: unplugged; lost with its path there: disconnected; there but failing to
    open: cannot open; opened or closed on purpose: no fault."""
    port = _port()
    _fail(port, T0, missing=True)
    assert port.snapshot(T0).fault is FaultKind.UNPLUGGED
    _fail(port, T0 + S, "permission denied")
    assert port.snapshot(T0).fault is FaultKind.CANNOT_OPEN
    _open(port, T0 + 2 * S)
    assert port.snapshot(T0).fault is None
    port.lost(T0 + 3 * S, WALL0, "end of file", missing=False)
    assert port.snapshot(T0).fault is FaultKind.DISCONNECTED
    _open(port, T0 + 4 * S)
    port.lost(T0 + 5 * S, WALL0, "end of file", missing=True)
    assert port.snapshot(T0).fault is FaultKind.UNPLUGGED
    port.closed(T0 + 6 * S, WALL0, "removed")
    assert port.snapshot(T0).fault is None


def test_a_port_without_descriptor_is_polled_and_never_parked() -> None:
    """Polled every 20 ms from its opening; its reads never park it."""
    port = _port("loop://")
    _open(port, T0, polled=True)
    assert port.wakeup_ns() == T0
    assert port.visit(T0) is Visit.POLL
    assert port.wakeup_ns() == T0 + 20 * MS
    assert port.visit(T0 + 19 * MS) is Visit.NOTHING
    assert port.visit(T0 + 25 * MS) is Visit.POLL and port.wakeup_ns() == T0 + 45 * MS
    for i in range(2 * MIN_SAMPLES):
        t = T0 + i * S
        assert port.received(V5[:100], t, WALL0).park_until_ns == 0
        assert port.received(V5[100:], t + 80 * MS, WALL0).park_until_ns == 0


def _paced(port: PortState, t: int, first: int = 100) -> int:
    """A frame read in two pieces at line pace from `t`; until when the first read parks."""
    until = port.received(V5[:first], t, WALL0).park_until_ns
    port.received(V5[first:], t + (len(V5) - first) * BYTE_NS, WALL0)
    return until


def test_paced_frames_park_the_port_until_shortly_before_the_frame_ends() -> None:
    """After 3 paced frames, the read that begins one parks the port until its predicted end
    minus the guard; a lost port forgets the prediction; without coalescing nothing parks."""
    port = _port(spec="V5")
    _open(port, T0)
    assert [_paced(port, T0 + i * S) for i in range(MIN_SAMPLES)] == [0] * MIN_SAMPLES
    t = T0 + MIN_SAMPLES * S
    guard = TIMINGS.coalesce_guard_ns
    assert guard is not None
    assert _paced(port, t) == t + (len(V5) - 100) * BYTE_NS - guard
    port.lost(t + S, WALL0, "gone", missing=False)
    _open(port, t + 2 * S)
    assert _paced(port, t + 3 * S) == 0
    off = _port(spec="V5", timings=Timings(coalesce_guard_ns=None))
    _open(off, T0)
    assert [_paced(off, T0 + i * S) for i in range(2 * MIN_SAMPLES)] == [0] * 2 * MIN_SAMPLES


def test_a_framer_that_raises_is_reset_and_reading_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A framer bug on one read: the error is handed back, the partial frame forgotten without
    a report, and the next telegram framed as ever."""
    port = _port(spec="V5")
    _open(port, T0)
    _read(port, V5[:300], T0)
    real = Framer.feed

    def feed(self: Framer, data: bytes) -> list[FramerEvent]:
        """The real framer, except on one poisoned read."""
        if data == b"poison":
            raise ValueError("framer bug")
        return real(self, data)

    monkeypatch.setattr(Framer, "feed", feed)
    failed = port.received(b"poison", T0 + MS, WALL0)
    assert isinstance(failed.framer_error, ValueError) and failed.events == []
    assert port.pending == 0
    (frame,) = _read(port, V5, T0 + 2 * MS)
    assert isinstance(frame, FrameReceived) and frame.frame.raw == V5


def test_consumer_failures_are_counted_per_port() -> None:
    """Each failure is counted in the port's health; the count is returned for throttled logs."""
    port = _port()
    assert [port.consumer_failed() for _ in range(3)] == [1, 2, 3]
    assert port.snapshot(T0).counters.consumer_errors == 3


# --- any order of happenings ----------------------------------------------------------------------


class PortLife(RuleBasedStateMachine):
    """Drives one port through any order of the loop's happenings, against a small model of
    the phases, the reopen schedule, the reports and the counters."""

    @initialize()
    def start(self) -> None:
        """A fresh idle port at T0."""
        self.port = _port(spec="V5")
        self.now = T0
        self.phase = Phase.IDLE
        self.polled = False
        self.failures = 0
        self.last_error: str | None = None
        self.missing_since: int | None = None
        self.was_lost = False
        self.retry_at = 0
        self.next_poll = 0
        self.open_failures = 0
        self.reconnects = 0
        self.frames = 0
        self.truncated = 0
        self.last_data = 0
        self.generations: list[int] = []

    @precondition(lambda self: self.phase in (Phase.IDLE, Phase.WAITING))
    @rule()
    def begin_open(self) -> None:
        """An attempt starts: only its result is expected."""
        generation = self.port.begin_open()
        assert all(not self.port.expects(g) for g in self.generations)
        assert self.port.expects(generation)
        self.generations.append(generation)
        self.phase = Phase.OPENING

    @precondition(lambda self: self.phase is Phase.OPENING)
    @rule(polled=st.booleans())
    def opened(self, polled: bool) -> None:
        """The attempt succeeds: reported, a reconnect after a loss."""
        events = self.port.opened(self.now, WALL0, request_line_held=None, polled=polled)
        assert [(type(e), getattr(e, "reconnect", None)) for e in events] == [
            (PortOpened, self.was_lost)
        ]
        self.reconnects += self.was_lost
        self.phase, self.polled, self.next_poll = Phase.OPEN, polled, self.now
        self.failures, self.last_error, self.missing_since, self.was_lost = 0, None, None, False

    @precondition(lambda self: self.phase is Phase.OPENING)
    @rule(error=st.sampled_from(["busy", "denied"]), missing=st.booleans())
    def open_failed(self, error: str, missing: bool) -> None:
        """The attempt fails: reported when first or changed; retried on the backoff or watched."""
        events = self.port.open_failed(self.now, WALL0, error, missing=missing)
        self.failures += 1
        self.open_failures += 1
        delay = min(TIMINGS.reopen_initial_ns * 2 ** (self.failures - 1), TIMINGS.reopen_max_ns)
        self._wait(delay, missing)
        if self.failures == 1 or error != self.last_error:
            self.last_error = error
            (failed,) = events
            assert isinstance(failed, PortOpenFailed)
            assert (failed.error, failed.attempts) == (error, self.failures)
            retry = delay
            if self.missing_since is not None:  # watched: the presence check's interval
                slow = self.now - self.missing_since >= TIMINGS.presence_slow_after_ns
                retry = TIMINGS.presence_slow_ns if slow else TIMINGS.presence_ns
            assert failed.retry_in_s == retry / 1e9
        else:
            assert events == []

    @precondition(lambda self: self.phase is Phase.OPEN)
    @rule(missing=st.booleans())
    def lost(self, missing: bool) -> None:
        """The open port fails: its partial frame truncated, then PortLost; reopen after 0.1 s."""
        pending = self.port.pending
        events = self.port.lost(self.now, WALL0, "gone", missing=missing)
        expected = [FrameDropped, PortLost] if pending else [PortLost]
        assert [type(e) for e in events] == expected
        self.truncated += bool(pending)
        self.failures, self.was_lost = 0, True
        self._wait(TIMINGS.reopen_initial_ns, missing)

    @rule(reason=st.sampled_from(["removed", "changed", "stopped"]))
    def closed(self, reason: str) -> None:
        """Closed on purpose in any phase: PortClosed only if it was open."""
        events = self.port.closed(self.now, WALL0, reason)
        closes = [e for e in events if isinstance(e, PortClosed)]
        assert len(closes) == (self.phase is Phase.OPEN)
        self.truncated += sum(isinstance(e, FrameDropped) for e in events)
        self.phase = Phase.IDLE

    @precondition(lambda self: self.phase is Phase.OPEN)
    @rule(part=st.sampled_from([V5, V5[:300], V5[300:]]))
    def received(self, part: bytes) -> None:
        """Bytes arrive: only whole telegrams come out as frames."""
        events = self.port.received(part, self.now, WALL0 + self.now).events
        frames = [e for e in events if isinstance(e, FrameReceived)]
        assert all(f.frame.raw == V5 for f in frames)
        self.frames += len(frames)
        drops = [e for e in events if isinstance(e, FrameDropped)]
        assert all(d.received_monotonic_ns in (self.last_data, self.now) for d in drops)
        self.truncated += len(drops)
        self.last_data = self.now

    @rule(step=st.integers(0, 2 * S))
    def time_passes(self, step: int) -> None:
        """The loop visits the port later: it polls, checks presence or reopens when due."""
        self.now += step
        before = self.port.next_presence_check_ns()
        visit = self.port.visit(self.now)
        if self.phase is Phase.OPEN and self.polled and self.now >= self.next_poll:
            assert visit is Visit.POLL
            self.next_poll = self.now + TIMINGS.poll_ns
        elif self.phase is Phase.WAITING and self.missing_since is not None:
            assert before is not None
            assert visit is (Visit.CHECK_PRESENCE if self.now >= before else Visit.NOTHING)
        elif self.phase is Phase.WAITING:
            assert visit is (Visit.OPEN if self.now >= self.retry_at else Visit.NOTHING)
        else:
            assert visit is Visit.NOTHING
        silent = self.port.tick(self.now, WALL0)
        assert silent is None or self.phase is Phase.OPEN
        pending = self.port.pending
        expired = self.port.expire(self.now)
        if self.phase is Phase.OPEN and pending and self.now >= self.last_data + S:
            (dropped,) = expired
            assert isinstance(dropped, FrameDropped) and dropped.ended_by is FrameEnd.QUIET_LINE
            assert (dropped.size, dropped.received_wall_ns) == (pending, WALL0 + self.last_data)
            self.truncated += 1
        else:
            assert expired == []

    def _wait(self, delay: int, missing: bool) -> None:
        """The model of waiting to reopen: after `delay`, or on the presence grid if missing."""
        self.phase = Phase.WAITING
        self.retry_at = self.now + delay
        if not missing:
            self.missing_since = None
            assert self.port.wakeup_ns() == self.retry_at
            return
        if self.missing_since is None:
            self.missing_since = self.now
        due = self.port.wakeup_ns()
        assert due is not None and due > self.now and due % TIMINGS.presence_ns == 0

    @invariant()
    def agrees_with_the_model(self) -> None:
        """Phase, health state, visits needed and counters are what the model says."""
        if not hasattr(self, "port"):
            return
        assert self.port.phase is self.phase
        snap = self.port.snapshot(self.now)
        assert (snap.state is HealthState.DOWN) == (self.phase is not Phase.OPEN)
        visited = self.phase is Phase.WAITING or (self.phase is Phase.OPEN and self.polled)
        assert (self.port.wakeup_ns() is not None) == visited
        counters = snap.counters
        assert (counters.open_failures, counters.reconnects) == (
            self.open_failures,
            self.reconnects,
        )
        assert counters.telegrams == self.frames
        assert counters.truncated == self.truncated


TestPortLife = PortLife.TestCase
TestPortLife.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
