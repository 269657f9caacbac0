"""The router: fixes each reception's holder from its reception time. Pure; clocks are arguments.

A reception is routed to the holder of the slot that contains its reception wall time, once,
when it is received: a backlog sent after an outage still goes to the holder of the slot in
which it was received. Outside every slot it goes to no holder.

Clock trust: with `require_sync`, nothing is routed while the wall clock is not synchronised.
Receptions meanwhile are held (bounded; the oldest is dropped and counted when full) with
their monotonic reception time. Once the clock is synchronised, their wall time is rebuilt as
`mono + (wall_now - mono_now)` and they are routed then, in reception order.

Session edges: the router keeps the `SessionBook` in routing order. Each route carries the edges
due before it (`Route.edges`: a holder's `start` before its first reception, ends as they fall
due) and the session it was routed into; `advance_time` gives the edges the clock alone brings
(a slot ending or starting while no telegram arrives). Held receptions released after a clock
sync are bracketed by their own (rebuilt) times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.publish.schedule import SlotSchedule
from gateway.publish.sessions import Edge, SessionBook

T = TypeVar("T")

#: Default bound on receptions held while the clock is unsynchronised.
DEFAULT_MAX_HELD = 5000


@dataclass(frozen=True, slots=True)
class Reception(Generic[T]):
    """One thing received on a variant's port, with both clocks read at its last byte."""

    variant: str
    mono_ns: int
    wall_ns: int
    item: T


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A reception's fixed route: its holder (None: outside every slot) and its wall time."""

    reception: Reception[T]
    holder: str | None
    wall_ns: int
    """The reception wall time used for routing and for `received_at`."""
    rebuilt: bool
    """True when `wall_ns` was rebuilt from the monotonic clock after a clock sync."""
    edges: tuple[Edge, ...] = ()
    """Session edges due before this reception, in order (to be published before it)."""
    session: int | None = None
    """The id of the holder's session it was routed into (None: no holder, or its session's
    `end` went before it: see `RouterCounters.after_end`)."""


@dataclass(slots=True)
class RouterCounters:
    """What the router has done since it was made."""

    routed: int = 0
    """Receptions routed to a holder."""
    unrouted: int = 0
    """Receptions outside every slot (they go to no slot topic)."""
    held: int = 0
    """Receptions held because the clock was not synchronised (total ever)."""
    held_dropped: int = 0
    """Held receptions dropped, oldest first, because the hold was full."""
    rebuilt: int = 0
    """Receptions whose wall time was rebuilt from the monotonic clock."""
    after_end: int = 0
    """Receptions routed to a holder after their session's `end` (handed over more than the
    end lag after reading)."""


@dataclass(slots=True)
class Router(Generic[T]):
    """Routes receptions by slot schedule and clock trust. Not thread-safe: guard it."""

    schedule: SlotSchedule
    require_sync: bool = True
    max_held: int = DEFAULT_MAX_HELD
    counters: RouterCounters = field(default_factory=RouterCounters)
    sessions: SessionBook = field(default_factory=SessionBook)
    _held: deque[Reception[T]] = field(default_factory=deque)
    _synced_since_mono_ns: int | None = None

    @property
    def held(self) -> int:
        """How many receptions wait for the clock to be synchronised."""
        return len(self._held)

    def replace_schedule(self, schedule: SlotSchedule) -> None:
        """Swap in a new schedule whole (on reload); receptions from now on use it, and the
        open sessions are reconciled with it at the next advance (`advance_time`)."""
        self.schedule = schedule
        self.sessions.reschedule()

    def _trusted(self, synced: bool, now_mono_ns: int) -> bool:
        """Record a clock observation; True when routing may happen now."""
        if not self.require_sync:
            return True
        if not synced:
            self._synced_since_mono_ns = None
            return False
        if self._synced_since_mono_ns is None:
            self._synced_since_mono_ns = now_mono_ns
        return True

    def _route(self, reception: Reception[T], now_mono_ns: int, now_wall_ns: int) -> Route[T]:
        """Route one reception the clock is trusted for."""
        since = self._synced_since_mono_ns
        rebuilt = self.require_sync and since is not None and reception.mono_ns < since
        if rebuilt:
            wall_ns = reception.mono_ns + (now_wall_ns - now_mono_ns)
            self.counters.rebuilt += 1
        else:
            wall_ns = reception.wall_ns
        # Ends wait for late receptions (end lag), but never past this reception's own time:
        # a held one released now is bracketed as if it had been routed when received.
        ends_to = min(wall_ns, now_wall_ns - self.sessions.end_lag_ns)
        edges = self.sessions.advance(
            self.schedule, starts_to=wall_ns, ends_to=ends_to, now_ns=now_wall_ns
        )
        holder = self.schedule.holder_at_ns(wall_ns)
        session = None
        if holder is None:
            self.counters.unrouted += 1
        else:
            self.counters.routed += 1
            session = self.sessions.session_for(holder, wall_ns)
            if session is None:
                self.counters.after_end += 1
        return Route(reception, holder, wall_ns, rebuilt, tuple(edges), session)

    def _release(self, now_mono_ns: int, now_wall_ns: int) -> list[Route[T]]:
        """Route every held reception, oldest first."""
        out = [self._route(r, now_mono_ns, now_wall_ns) for r in self._held]
        self._held.clear()
        return out

    def accept(
        self, reception: Reception[T], *, synced: bool, now_mono_ns: int, now_wall_ns: int
    ) -> list[Route[T]]:
        """Take one reception: its route (after any held ones released now), or [] if held."""
        if not self._trusted(synced, now_mono_ns):
            if len(self._held) >= self.max_held:
                self._held.popleft()
                self.counters.held_dropped += 1
            self._held.append(reception)
            self.counters.held += 1
            return []
        out = self._release(now_mono_ns, now_wall_ns) if self._held else []
        out.append(self._route(reception, now_mono_ns, now_wall_ns))
        return out

    def advance_time(self, *, synced: bool, now_mono_ns: int, now_wall_ns: int) -> list[Edge]:
        """The session edges the clock brings by now, the end lag late (none while it is not
        trusted, or while receptions are held: `poll` releases those first)."""
        if not self._trusted(synced, now_mono_ns) or self._held:
            return []
        upto = now_wall_ns - self.sessions.end_lag_ns
        return self.sessions.advance(
            self.schedule, starts_to=upto, ends_to=upto, now_ns=now_wall_ns
        )

    def poll(self, *, synced: bool, now_mono_ns: int, now_wall_ns: int) -> list[Route[T]]:
        """Release the held receptions if the clock is now trusted (call it periodically)."""
        if not self._trusted(synced, now_mono_ns) or not self._held:
            return []
        return self._release(now_mono_ns, now_wall_ns)
