"""One port's life as a pure state machine: what the reader loop does with it, and what it reports.

No IO, no threads, no clock and no logging of its own: the loop (`gateway.mux.multiplexer`)
tells a `PortState` what happened, with the time it happened at, and acts on the answer. Inputs
are the port's happenings: an open begun, opened, failed to open (its path missing or not), lost,
closed on purpose, bytes read, time passing. Answers are the decisions: the `MuxEvent`s to hand
to the consumer, when to park the descriptor, what to do on a visit without readiness (poll,
check the path's presence, reopen) and when the next such visit is due, when the port falls
silent.

Phases:

```
 IDLE ──begin_open──▶ OPENING ──opened──▶ OPEN ──lost──▶ WAITING ──visit: OPEN──▶ OPENING
  ▲                      │ open_failed ─────────────────────▶ │  (or: its path appeared)
  └──────────────── closed (from any phase) ◀─────────────────┘
```

Reopening after a failure or a loss: after `reopen_initial` (0.1 s), doubling with each failure
in a row up to `reopen_max` (1 s); a loss starts again at 0.1 s. While a device path is missing,
no open is tried: its presence is checked on a grid every missing port shares (so any number of
them cost one wake-up per check), every `presence` (50 ms), and after `presence_slow_after` (30 s)
missing, every `presence_slow` (0.5 s, on points of the fast grid too).

A frame that gets no byte for the port's `truncate_after_s` (1 s) is cut short: `quiet_due_ns`
says when, and `expire` cuts it (the loop visits on its health tick, so it is cut between one
and two such spans after its last byte). A dropped frame (cut short, oversize) is reported with
its bytes and the time of the read that brought its last byte, as a received frame is.

Health (`PortHealth`) and framing (`gateway.p1.Framer`, with the `ReadCoalescer`) are the
port's, and change only through these methods; the loop reads them under its own lock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.mux.coalesce import ReadCoalescer, byte_time_ns
from gateway.mux.events import (
    FrameDropped,
    FrameEnd,
    FrameReceived,
    MuxEvent,
    PortClosed,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
)
from gateway.mux.health import HealthState, PortHealth, PortHealthSnapshot
from gateway.mux.profile import PortConfig
from gateway.p1 import DroppedFrame, Frame, Framer


class Phase(enum.Enum):
    """Where a port is in its life."""

    IDLE = "idle"
    """Not open and not being opened: just configured, or closed on purpose."""
    OPENING = "opening"
    """An open attempt is in flight."""
    OPEN = "open"
    """Open and being read."""
    WAITING = "waiting"
    """Failed to open, or lost: reopened after a delay, or as soon as its path appears."""


class Visit(enum.Enum):
    """What the loop does for a port on a visit without readiness."""

    NOTHING = "nothing"
    POLL = "poll"
    """Read a descriptor-less port's buffered bytes."""
    CHECK_PRESENCE = "check_presence"
    """Look whether the missing device path is there now; open the port if it is."""
    OPEN = "open"
    """Try to open the port again: its reopen delay is over."""


@dataclass(frozen=True, slots=True)
class Timings:
    """The loop's timings for every port, in nanoseconds."""

    reopen_initial_ns: int = 100_000_000
    reopen_max_ns: int = 1_000_000_000
    poll_ns: int = 20_000_000
    """How often a port without a descriptor is polled."""
    presence_ns: int = 50_000_000
    presence_slow_ns: int = 500_000_000
    """A whole multiple of `presence_ns`: the slow grid's points are on the fast grid."""
    presence_slow_after_ns: int = 30_000_000_000
    coalesce_guard_ns: int | None = 3_000_000
    """The read coalescer's guard; None: coalescing off."""

    @classmethod
    def of(
        cls,
        *,
        reopen_initial_s: float,
        reopen_max_s: float,
        poll_interval_s: float,
        presence_check_s: float,
        presence_slow_s: float,
        presence_slow_after_s: float,
        coalesce: bool,
        coalesce_guard_s: float,
    ) -> Timings:
        """Timings from seconds (the `Multiplexer`'s arguments)."""
        presence_ns = int(presence_check_s * 1e9)
        return cls(
            reopen_initial_ns=int(reopen_initial_s * 1e9),
            reopen_max_ns=int(reopen_max_s * 1e9),
            poll_ns=int(poll_interval_s * 1e9),
            presence_ns=presence_ns,
            presence_slow_ns=presence_ns * max(1, round(presence_slow_s / presence_check_s)),
            presence_slow_after_ns=int(presence_slow_after_s * 1e9),
            coalesce_guard_ns=int(coalesce_guard_s * 1e9) if coalesce else None,
        )


@dataclass(frozen=True, slots=True)
class Received:
    """What one read's bytes come to: the events to emit, and when to read the port next."""

    events: Sequence[MuxEvent]
    park_until_ns: int = 0
    """Leave the descriptor alone until then (0: keep or make it armed for readability)."""
    framer_error: Exception | None = None
    """The framer raised on these bytes; it was reset (the loop logs this)."""


_NOTHING_RECEIVED = Received(())


class PortState:
    """One configured port's life: its phase, reopen schedule, framer, coalescer and health."""

    __slots__ = (
        "_coalescer",
        "_config",
        "_consumer_errors",
        "_failures",
        "_framer",
        "_generation",
        "_health",
        "_last_data_ns",
        "_last_data_wall_ns",
        "_last_failure",
        "_missing_since_ns",
        "_next_check_ns",
        "_phase",
        "_polled",
        "_quiet_ns",
        "_retry_at_ns",
        "_timings",
        "_was_lost",
    )

    def __init__(self, config: PortConfig, timings: Timings, now_ns: int) -> None:
        self._config = config
        self._timings = timings
        self._health = PortHealth(
            config.variant,
            url=config.url,
            spec=config.spec,
            interval_s=config.interval_s,
            now_ns=now_ns,
        )
        self._framer = _framer_for(config)
        self._coalescer = _coalescer_for(config, timings.coalesce_guard_ns)
        self._phase = Phase.IDLE
        self._generation = 0
        """Counts open attempts and closes: an open result of an older one is stale."""
        self._polled = False
        """Open without a descriptor: read by polling."""
        self._retry_at_ns = 0
        self._next_check_ns = 0
        """The next presence check (waiting, path missing) or poll (open, polled)."""
        self._failures = 0
        self._last_failure: str | None = None
        self._missing_since_ns: int | None = None
        """While waiting: when the port's path was first found missing; None: it is there."""
        self._was_lost = False
        self._consumer_errors = 0
        self._quiet_ns = round(config.truncate_after_s * 1e9)
        self._last_data_ns = 0
        """The monotonic and wall times of the last read that brought bytes."""
        self._last_data_wall_ns = 0

    # --- reading the state ------------------------------------------------------------------

    @property
    def config(self) -> PortConfig:
        """The port's configuration."""
        return self._config

    @property
    def phase(self) -> Phase:
        """Where the port is in its life."""
        return self._phase

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished frame the framer holds."""
        return self._framer.pending

    def snapshot(self, now_ns: int) -> PortHealthSnapshot:
        """The port's health now, frozen."""
        return self._health.snapshot(now_ns)

    def next_presence_check_ns(self) -> int | None:
        """When the missing path is checked next; None unless waiting with its path missing."""
        if self._phase is not Phase.WAITING or self._missing_since_ns is None:
            return None
        return self._next_check_ns

    def wakeup_ns(self) -> int | None:
        """When the loop must visit the port without readiness; None: only readiness matters."""
        if self._phase is Phase.WAITING:
            return self._next_check_ns if self._missing_since_ns is not None else self._retry_at_ns
        if self._phase is Phase.OPEN and self._polled:
            return self._next_check_ns
        return None

    def silent_due_ns(self) -> int | None:
        """When `tick` would call the port silent if no telegram came first; None if it cannot."""
        return self._health.silent_due_ns()

    def quiet_due_ns(self) -> int | None:
        """When `expire` cuts the frame in progress if no byte comes first; None: no frame."""
        if self._phase is not Phase.OPEN or not self._framer.in_frame:
            return None
        return self._last_data_ns + self._quiet_ns

    # --- opening and closing -----------------------------------------------------------------

    def begin_open(self) -> int:
        """An open attempt starts; returns its generation, which its result must bring back."""
        if self._phase is Phase.OPEN:
            raise RuntimeError(f"port {self._config.variant} is open already")
        self._generation += 1
        self._phase = Phase.OPENING
        return self._generation

    def expects(self, generation: int) -> bool:
        """Whether an open result of `generation` is current (not closed or reattempted since)."""
        return self._phase is Phase.OPENING and generation == self._generation

    def opened(
        self, now_ns: int, wall_ns: int, *, request_line_held: bool | None, polled: bool
    ) -> list[MuxEvent]:
        """The attempt succeeded: the port is up (`polled`: it has no descriptor to wait on)."""
        self._require(Phase.OPENING)
        self._phase = Phase.OPEN
        self._polled = polled
        self._failures = 0
        self._missing_since_ns = None
        self._last_failure = None
        self._framer.reset()
        if self._coalescer is not None:
            self._coalescer.reset()
        self._next_check_ns = now_ns
        reconnect, self._was_lost = self._was_lost, False
        self._health.opened(now_ns)
        config = self._config
        return [
            PortOpened(
                config.variant,
                config.url,
                str(config.profile),
                config.request_line,
                request_line_held,
                reconnect,
                now_ns,
                wall_ns,
            )
        ]

    def open_failed(
        self, now_ns: int, wall_ns: int, error: str, *, missing: bool
    ) -> list[MuxEvent]:
        """The attempt failed (`missing`: the device path is not there): wait, then reopen.

        Reported on the first failure in a row and when the error changes, not on every retry.
        """
        self._require(Phase.OPENING)
        timings = self._timings
        self._failures += 1
        delay = min(timings.reopen_initial_ns * 2 ** (self._failures - 1), timings.reopen_max_ns)
        self._wait(now_ns, delay, missing)
        self._health.open_failed(now_ns, error, missing=missing)
        if self._failures != 1 and error == self._last_failure:
            return []
        self._last_failure = error
        retry_ns = delay if self._missing_since_ns is None else self._presence_interval(now_ns)
        config = self._config
        return [
            PortOpenFailed(
                config.variant,
                config.url,
                error,
                self._failures,
                retry_ns / 1e9,
                now_ns,
                wall_ns,
            )
        ]

    def lost(self, now_ns: int, wall_ns: int, error: str, *, missing: bool) -> list[MuxEvent]:
        """The open port failed and its handle was closed: a partial frame is truncated, and
        the port is reopened after the first reopen delay (or when its missing path appears)."""
        self._require(Phase.OPEN)
        events = self._detach(FrameEnd.PORT_LOST)
        self._was_lost = True
        self._failures = 0
        self._wait(now_ns, self._timings.reopen_initial_ns, missing)
        self._health.lost(now_ns, error, missing=missing)
        config = self._config
        events.append(PortLost(config.variant, config.url, error, now_ns, wall_ns))
        return events

    def closed(self, now_ns: int, wall_ns: int, reason: str) -> list[MuxEvent]:
        """The port was closed on purpose ('removed', 'changed', 'stopped'), in any phase; an
        open in flight becomes stale. Reported only if it was open."""
        was_open = self._phase is Phase.OPEN
        events = self._detach(FrameEnd.PORT_CLOSED)
        self._generation += 1
        self._phase = Phase.IDLE
        self._health.closed(now_ns)
        if was_open:
            config = self._config
            events.append(PortClosed(config.variant, config.url, reason, now_ns, wall_ns))
        return events

    def reconfigure(self, config: PortConfig) -> None:
        """Take a changed configuration (closed first): a new framer, counters kept."""
        self._require(Phase.IDLE)
        self._health.reconfigure(url=config.url, spec=config.spec, interval_s=config.interval_s)
        self._config = config
        self._framer = _framer_for(config)
        self._coalescer = _coalescer_for(config, self._timings.coalesce_guard_ns)
        self._quiet_ns = round(config.truncate_after_s * 1e9)
        self._failures = 0
        self._last_failure = None

    def visit(self, now_ns: int) -> Visit:
        """The loop looks at the port without readiness at `now_ns`: what to do now."""
        if self._phase is Phase.OPEN:
            if self._polled and now_ns >= self._next_check_ns:
                self._next_check_ns = now_ns + self._timings.poll_ns
                return Visit.POLL
        elif self._phase is Phase.WAITING:
            if self._missing_since_ns is not None:  # opened when it appears, not on a timer
                if now_ns >= self._next_check_ns:
                    self._next_check_ns = self._next_presence_check(now_ns)
                    return Visit.CHECK_PRESENCE
            elif now_ns >= self._retry_at_ns:
                return Visit.OPEN
        return Visit.NOTHING

    # --- traffic and time --------------------------------------------------------------------

    def received(
        self, data: bytes, now_ns: int, wall_ns: int, *, ready_ns: int = 0, parked: bool = False
    ) -> Received:
        """One read brought `data` at `now_ns`: frame it, count it, say when to read next.

        `ready_ns`: when readiness was reported (the coalescer times the read by it, the bytes
        were there by then); `parked`: the read was made at a park deadline, without readiness.
        An empty `data` is a read that brought nothing: counted, and the port is armed.
        """
        health = self._health
        if not data:
            health.received(0, 0)
            return _NOTHING_RECEIVED
        framer = self._framer
        began_partial = framer.pending > 0
        noise_before = framer.counters.noise_bytes
        before_ns, before_wall_ns = self._last_data_ns, self._last_data_wall_ns
        self._last_data_ns, self._last_data_wall_ns = now_ns, wall_ns
        error: Exception | None = None
        events: list[MuxEvent] = []
        try:
            out = framer.feed(data)
        except Exception as exc:
            error = exc
            out = []
            framer.reset()
            if self._coalescer is not None:
                self._coalescer.reset()
        else:
            variant = self._config.variant
            health.received(len(data), framer.counters.noise_bytes - noise_before)
            for item in out:
                if isinstance(item, Frame):
                    change = health.telegram(
                        crc_ok=item.crc_ok, raw=item.raw, monotonic_ns=now_ns, wall_ns=wall_ns
                    )
                    if change is HealthState.UP:
                        events.append(PortUp(variant, now_ns, wall_ns))
                    events.append(FrameReceived(variant, item, now_ns, wall_ns))
                elif item.earlier:  # its last byte came with the read before this one
                    events.append(
                        self._dropped(item, before_ns, before_wall_ns, FrameEnd.NEXT_FRAME)
                    )
                else:
                    events.append(self._dropped(item, now_ns, wall_ns, FrameEnd.NEXT_FRAME))
        coalescer = self._coalescer
        if coalescer is None or self._polled:
            return Received(events, 0, error)
        sizes = [len(item.raw) for item in out if isinstance(item, Frame)]
        until = coalescer.after_read(
            min(now_ns, ready_ns) if ready_ns else now_ns,
            len(data),
            began_partial=began_partial,
            pending=framer.pending,
            frame_sizes=sizes,
            dropped=len(sizes) < len(out),
            parked=parked,
        )
        return Received(events, until, error)

    def tick(self, now_ns: int, wall_ns: int) -> PortSilent | None:
        """Let time pass: the port falls silent after 3 expected intervals without a telegram."""
        health = self._health
        if health.tick(now_ns) is not HealthState.SILENT:
            return None
        return PortSilent(
            self._config.variant,
            round(health.quiet_s(now_ns), 3),
            health.interval_s,
            now_ns,
            wall_ns,
        )

    def expire(self, now_ns: int) -> list[MuxEvent]:
        """Let time pass inside a frame: no byte for `truncate_after_s` cuts it short (its
        drop is received at the read of its last byte). Nothing when not due."""
        due = self.quiet_due_ns()
        if due is None or now_ns < due:
            return []
        dropped = self._framer.cut()
        if self._coalescer is not None:
            self._coalescer.abandon()
        if dropped is None:
            return []
        mono, wall = self._last_data_ns, self._last_data_wall_ns
        return [self._dropped(dropped, mono, wall, FrameEnd.QUIET_LINE)]

    def consumer_failed(self) -> int:
        """The consumer raised on one of this port's events; returns how many times so far."""
        self._health.consumer_error()
        self._consumer_errors += 1
        return self._consumer_errors

    # --- inside ---------------------------------------------------------------------------

    def _require(self, phase: Phase) -> None:
        """Refuse a happening that cannot come in the current phase (a loop bug)."""
        if self._phase is not phase:
            raise RuntimeError(
                f"port {self._config.variant} is {self._phase.value}, not {phase.value}"
            )

    def _dropped(self, item: DroppedFrame, mono: int, wall: int, end: FrameEnd) -> FrameDropped:
        """Count a dropped frame and report it, received at (`mono`, `wall`)."""
        reason = item.reason.value
        self._health.dropped(reason)
        return FrameDropped(self._config.variant, reason, item.size, mono, wall, item.raw, end)

    def _detach(self, end: FrameEnd) -> list[MuxEvent]:
        """The handle is gone: end the partial frame (a drop) and forget the prediction."""
        if self._coalescer is not None:
            self._coalescer.reset()
        dropped = self._framer.cut()
        self._framer.reset()
        if dropped is None:
            return []
        return [self._dropped(dropped, self._last_data_ns, self._last_data_wall_ns, end)]

    def _wait(self, now_ns: int, delay_ns: int, missing: bool) -> None:
        """Wait to reopen: after `delay_ns`, or, while the path is missing, when it appears."""
        self._phase = Phase.WAITING
        self._retry_at_ns = now_ns + delay_ns
        if not missing:
            self._missing_since_ns = None
        elif self._missing_since_ns is None:
            self._missing_since_ns = now_ns
        self._next_check_ns = self._next_presence_check(now_ns)

    def _presence_interval(self, now_ns: int) -> int:
        """How often the missing path is checked: fast while it has been missing for less than
        `presence_slow_after` (a meter being swapped), then slow (a meter left unplugged)."""
        timings = self._timings
        since = self._missing_since_ns
        if since is not None and now_ns - since >= timings.presence_slow_after_ns:
            return timings.presence_slow_ns
        return timings.presence_ns

    def _next_presence_check(self, now_ns: int) -> int:
        """The next point of the presence grid that every port shares (its slow grid's points
        are all on the fast one's), so that missing ports cost one wake-up per check."""
        interval = self._presence_interval(now_ns)
        return (now_ns // interval + 1) * interval


def _framer_for(config: PortConfig) -> Framer:
    """A fresh framer with the port's frame bound and parity stripping."""
    return Framer(max_frame_size=config.max_frame_size, strip_parity=config.profile.strip_parity)


def _coalescer_for(config: PortConfig, guard_ns: int | None) -> ReadCoalescer | None:
    """The port's read coalescer, at its line's byte rate; None when coalescing is off."""
    if guard_ns is None:
        return None
    p = config.profile
    return ReadCoalescer(
        guard_ns=guard_ns, byte_ns=byte_time_ns(p.baudrate, p.bytesize, p.parity, p.stopbits)
    )
