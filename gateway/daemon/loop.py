"""The main loop's pure parts: when each timed job is due, and whether systemd's watchdog may
be fed. No clock, thread or IO of their own: the caller passes the time."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping

from gateway.mux import LoopProgress
from gateway.publish import PublisherLiveness

#: The reader loop wakes at least every 0.1 s; this much silence means it is stuck.
READER_STALL_S = 5.0
#: A status-file write that takes this long is a hung disk: the watchdog is withheld.
STATUS_STALL_S = 20.0


class Job(enum.Enum):
    """What the main loop does on a timer."""

    WATCH = "watch"
    """Look at the config files' signatures (a change reloads)."""
    HEALTH = "health"
    """Publish every port's health (a state change goes out at once, between ticks)."""
    STATUS = "status"
    """Rewrite the status file; tell systemd its one-line summary."""
    WATCHDOG = "watchdog"
    """Send WATCHDOG=1, while every loop makes progress."""


def next_due(due: float, every: float, now: float) -> float:
    """The first time after `now` on the grid `due + k * every` (missed ticks are skipped)."""
    if every <= 0:
        return now
    return due + every * (int((now - due) // every) + 1)


class Timers:
    """When each of the main loop's jobs is next due.

    Every job starts due at `origin` and keeps to its grid `origin + k * period`: jobs of equal
    period (the status file and the config watch, 1 s each by default) fall due together, one
    wake-up a second when idle. Ticks missed while the loop was busy are skipped, not caught up.
    """

    def __init__(self, origin: float, periods: Mapping[Job, float | None]) -> None:
        self._periods = {job: every for job, every in periods.items() if every is not None}
        self._due = dict.fromkeys(self._periods, origin)

    def due(self, now: float) -> frozenset[Job]:
        """The jobs due at `now` (a job given no period never is)."""
        return frozenset(job for job, at in self._due.items() if now >= at)

    def done(self, job: Job, now: float) -> None:
        """`job` ran at `now`: it is due again at its first tick after `now`."""
        self._due[job] = next_due(self._due[job], self._periods[job], now)

    def next_wake(self) -> float:
        """When the first job falls due (infinity when there is none)."""
        return min(self._due.values(), default=math.inf)


def watchdog_ok(
    progress: LoopProgress, liveness: PublisherLiveness, now_ns: int, status_busy_s: float = 0.0
) -> bool:
    """True while the reader loop, the MQTT side and the status writer all make progress."""
    if not progress.running or progress.last_iteration_monotonic_ns == 0:
        return False
    reader_age_s = (now_ns - progress.last_iteration_monotonic_ns) / 1e9
    return reader_age_s <= READER_STALL_S and liveness.ok() and status_busy_s <= STATUS_STALL_S
