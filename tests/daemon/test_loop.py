"""The main loop's pure parts: its timers, and when the watchdog may be fed."""

from __future__ import annotations

import math

import pytest

from gateway.daemon.loop import STATUS_STALL_S, Job, Timers, next_due, watchdog_ok
from gateway.mux import LoopProgress
from gateway.publish import PublisherLiveness

NOW = 1_000_000_000_000


def alive(**kw: object) -> PublisherLiveness:
    """A healthy publisher liveness, with some fields replaced."""
    base: dict[str, object] = {
        "network_thread_alive": True,
        "network_progress_age": 0.1,
        "network_budget": 10.0,
        "writer_alive": True,
        "writer_progress_age": 0.1,
        "writer_budget": 10.0,
        "connected": True,
    }
    base.update(kw)
    return PublisherLiveness(**base)  # type: ignore[arg-type]


def loop(age_s: float, running: bool = True) -> LoopProgress:
    """A reader loop whose last iteration was `age_s` seconds ago."""
    return LoopProgress(running, 10, NOW - int(age_s * 1e9), 0.0)


def test_watchdog_fed_while_everything_progresses() -> None:
    """Both sides moving: WATCHDOG=1 may be sent, even while the broker is away."""
    assert watchdog_ok(loop(0.2), alive(), NOW)
    assert watchdog_ok(loop(0.2), alive(connected=False), NOW)


@pytest.mark.parametrize(
    ("progress", "liveness"),
    [
        (loop(30.0), alive()),
        (loop(0.1, running=False), alive()),
        (LoopProgress(True, 0, 0, None), alive()),
        (loop(0.1), alive(network_thread_alive=False)),
        (loop(0.1), alive(writer_alive=False)),
        (loop(0.1), alive(network_progress_age=60.0)),
        (loop(0.1), alive(writer_progress_age=60.0)),
    ],
)
def test_watchdog_withheld_when_a_loop_is_stuck(
    progress: LoopProgress, liveness: PublisherLiveness
) -> None:
    """A stalled or dead reader loop, paho thread or spool writer withholds WATCHDOG=1."""
    assert not watchdog_ok(progress, liveness, NOW)


def test_watchdog_withheld_while_a_status_write_hangs() -> None:
    """A status-file write that takes a few seconds is fine; one that hangs withholds it."""
    assert watchdog_ok(loop(0.1), alive(), NOW, status_busy_s=3.0)
    assert not watchdog_ok(loop(0.1), alive(), NOW, status_busy_s=STATUS_STALL_S + 1)


def test_next_due_keeps_the_grid_and_skips_missed_ticks() -> None:
    """Timers stay on due + k * every (so equal periods coincide); missed ticks are skipped."""
    assert next_due(10.0, 1.0, 10.0) == 11.0
    assert next_due(10.0, 1.0, 10.4) == 11.0
    assert next_due(10.0, 1.0, 13.5) == 14.0  # three ticks missed: no burst to catch up
    assert next_due(10.0, 5.0, 9.0) == 10.0  # not yet due: the first tick after now


def test_every_timer_is_due_at_the_start_and_equal_periods_fall_due_together() -> None:
    """At the origin every job is due; afterwards jobs of one period share their wake-ups."""
    timers = Timers(100.0, {Job.WATCH: 1.0, Job.STATUS: 1.0, Job.HEALTH: 5.0})
    assert timers.due(100.0) == {Job.WATCH, Job.STATUS, Job.HEALTH}
    for job in (Job.WATCH, Job.STATUS, Job.HEALTH):
        timers.done(job, 100.0)
    assert timers.due(100.5) == set()
    assert timers.next_wake() == 101.0
    assert timers.due(101.0) == {Job.WATCH, Job.STATUS}
    timers.done(Job.WATCH, 101.0)
    assert timers.due(101.0) == {Job.STATUS}  # a job not done stays due
    assert timers.next_wake() == 101.0


def test_a_late_timer_skips_its_missed_ticks() -> None:
    """A job run late is next due on its grid after now, not once per tick it missed."""
    timers = Timers(0.0, {Job.HEALTH: 5.0})
    timers.done(Job.HEALTH, 0.0)
    timers.done(Job.HEALTH, 17.0)  # the loop was busy for 17 s
    assert timers.next_wake() == 20.0
    assert timers.due(19.9) == set()


def test_a_job_without_a_period_never_falls_due() -> None:
    """No watchdog period (systemd does not watch): the watchdog job never runs."""
    timers = Timers(0.0, {Job.WATCHDOG: None, Job.STATUS: 1.0})
    assert timers.due(1e9) == {Job.STATUS}
    assert math.isinf(Timers(0.0, {Job.WATCHDOG: None}).next_wake())
