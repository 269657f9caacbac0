"""Sessions: each holder's slot edges and `prev_seq` chains, as a state machine without IO.

A session is a holder's run of back-to-back slots (`schedule.Run`). The book keeps which
sessions are open (their `start` given, their `end` not yet), says which edges are due as the
routing time moves on, and gives each message routed into a session its `prev_seq`. The router
calls it in routing order; the publisher turns its edges into `session` messages in the same
stream as the holder's telegrams, so they are bracketed in the order the tester receives them.

Time. A run's `start` is due once a reception at or after the run's start is routed: it
precedes the holder's first message. Ends (and, while no reception comes, starts) are brought by
the clock `end_lag_ns` late: a reception read just before a slot's end but handed over a little
later (a frame cut short and reported late, a busy reader) still precedes its holder's `end`.
A holder's own next `start` closes its open session first (so a reception of the earlier run
handed over after one of the next is routed after the `end`, and counted). Receptions held for
the clock and released after it syncs advance the edges to their own reception time only, in
order, so they are bracketed as if they had been routed live.

Reconciling. On the first advance (after a start or a restart) and after the schedule changes,
the open sessions are checked against the schedule: a session whose holder still holds the run
it was in continues (its bounds follow the schedule, no new `start`); any other is ended now (a
slot that ended while the gateway was down gets its `end` late, a cancelled slot ends at once);
and the run holding the rig now is started if it is not open. Runs that began and ended wholly
while no gateway ran get no markers.

Chains. `prev_seq` is the seq of the previous `telegram` or `invalid` message of the same
variant routed to the same holder in the same session, or None for the session's first. After
an unclean stop (kill -9, power cut) the sessions open then carry `gap`: the first message of
each of their chains gets GAP_SEQ, a value no message ever carries, because the messages of the
last batch window may have been lost (or published but not committed) with the process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gateway.publish.schedule import Run, SlotSchedule

#: The `prev_seq` that opens each chain of a session after an unclean stop: the largest
#: integer JSON carries exactly, reserved; no message ever has it as its seq.
GAP_SEQ = 2**53 - 1

#: How long past a run's end its `end` waits for late receptions (receptions read before the
#: end and handed to the router after it), by default.
DEFAULT_END_LAG_NS = 2_000_000_000

START = "start"
END = "end"


@dataclass(frozen=True, slots=True)
class Session:
    """An opened session: a holder's run, numbered when its `start` was given."""

    id: int
    holder: str
    start_ns: int
    end_ns: int
    gap: bool = False
    """Open across an unclean stop: a chain not continued since begins at GAP_SEQ."""


@dataclass(frozen=True, slots=True)
class Edge:
    """A session marker due now: `start` or `end` of `session`, given at `at_ns` (wall)."""

    event: str
    session: Session
    at_ns: int


@dataclass(frozen=True, slots=True)
class ChainLink:
    """The last seq of a (holder, variant) chain in a session."""

    holder: str
    variant: str
    session: int
    seq: int


@dataclass(frozen=True, slots=True)
class Announced:
    """A holder's slots as its retained schedule last said them, and since when."""

    holder: str
    slots: tuple[tuple[int, int], ...]
    """(start_ns, end_ns) of each current or coming slot."""
    updated_ns: int


@dataclass(frozen=True, slots=True)
class EdgeState:
    """What survives a restart, written in the same commit as the messages it describes."""

    sessions: tuple[Session, ...] = ()
    chains: tuple[ChainLink, ...] = ()
    next_session: int = 1
    announced: tuple[Announced, ...] = ()


_NO_EDGES: list[Edge] = []


class SessionBook:
    """Open sessions, due edges and prev_seq chains; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        state: EdgeState | None = None,
        *,
        unclean: bool = False,
        end_lag_ns: int = DEFAULT_END_LAG_NS,
    ):
        state = state or EdgeState()
        self.end_lag_ns = end_lag_ns
        self._open: dict[str, Session] = {}
        for s in state.sessions:
            self._open[s.holder] = dataclasses.replace(s, gap=True) if unclean else s
        self._chains: dict[tuple[str, str], tuple[int, int]] = {}
        if not unclean:  # after an unclean stop every chain of an open session starts anew
            for c in state.chains:
                held = self._open.get(c.holder)
                if held is not None and held.id == c.session:
                    self._chains[(c.holder, c.variant)] = (c.session, c.seq)
        ids = [s.id + 1 for s in state.sessions]
        self._next_id = max([state.next_session, *ids])
        self._cursor: int | None = None  # starts are done up to here (routing time, wall ns)
        self._ends_cursor: int | None = None  # ends are done up to here
        self._reconcile = True
        self._next_start: int | None = None  # cached: the first run start after the cursor
        self._next_end: int | None = None  # cached: the first open session's end
        self.dirty = bool(unclean and state.sessions)
        """Changed since the last `snapshot` taken for a commit."""

    # --- reading -------------------------------------------------------------------------

    @property
    def cursor(self) -> int | None:
        """The routing time the edges have been given up to (wall ns); None before the first."""
        return self._cursor

    @property
    def open_sessions(self) -> tuple[Session, ...]:
        """The open sessions, by holder."""
        return tuple(self._open[h] for h in sorted(self._open))

    def session_for(self, holder: str, wall_ns: int) -> int | None:
        """The id of the holder's open session containing `wall_ns`, or None (its `end` went)."""
        s = self._open.get(holder)
        if s is not None and s.start_ns <= wall_ns < s.end_ns:
            return s.id
        return None

    def next_due_ns(self) -> int | None:
        """When (wall ns) the clock alone next brings an edge (`end_lag_ns` after it), if any."""
        if self._cursor is None:
            return None
        due = [t for t in (self._next_start, self._next_end) if t is not None]
        return min(due) + self.end_lag_ns if due else None

    def snapshot(self) -> EdgeState:
        """The state to write with the next commit (clears `dirty`)."""
        self.dirty = False
        chains = tuple(
            ChainLink(h, v, sid, seq) for (h, v), (sid, seq) in sorted(self._chains.items())
        )
        return EdgeState(self.open_sessions, chains, self._next_id)

    # --- time and schedule ---------------------------------------------------------------

    def reschedule(self) -> None:
        """The schedule changed: reconcile the open sessions with it at the next advance."""
        self._reconcile = True

    def advance(
        self, schedule: SlotSchedule, *, starts_to: int, ends_to: int, now_ns: int
    ) -> list[Edge]:
        """Give the starts due up to `starts_to` and the ends due up to `ends_to` (routing
        times, wall ns), in order; `now_ns` is when they are given (their `at`)."""
        if self._ends_cursor is None or ends_to > self._ends_cursor:
            self._ends_cursor = ends_to
        if (
            not self._reconcile
            and (self._next_start is None or starts_to < self._next_start)
            and (self._next_end is None or self._ends_cursor < self._next_end)
        ):
            return _NO_EDGES  # the common case: nothing due
        out: list[Edge] = []
        cursor = self._cursor
        if self._reconcile or cursor is None:
            cursor = starts_to if cursor is None else max(cursor, starts_to)
            self._reconcile_at(schedule, cursor, now_ns, out)
            self._reconcile = False
        elif starts_to > cursor:
            for run in schedule.runs_starting(cursor, starts_to):
                self._close_ended(min(run.start_ns, self._ends_cursor), now_ns, out)
                self._start(run, now_ns, out)
            cursor = starts_to
        self._cursor = cursor
        self._close_ended(self._ends_cursor, now_ns, out)
        self._next_start = schedule.next_run_start(cursor)
        self._next_end = min((s.end_ns for s in self._open.values()), default=None)
        return out

    def _reconcile_at(self, schedule: SlotSchedule, at: int, now_ns: int, out: list[Edge]) -> None:
        """Check the open sessions against `schedule` at routing time `at` (module docstring)."""
        for s in sorted(self._open.values(), key=lambda s: s.end_ns):
            run = _same_session(schedule, s, at)
            if run is not None:
                if (run.start_ns, run.end_ns) != (s.start_ns, s.end_ns):
                    self._open[s.holder] = dataclasses.replace(
                        s, start_ns=run.start_ns, end_ns=run.end_ns
                    )
                    self.dirty = True
            else:
                self._close(s, now_ns, out)
        if self._ends_cursor is not None:
            self._close_ended(self._ends_cursor, now_ns, out)  # ends before the start below
        run = schedule.run_at_ns(at)
        if run is not None:
            self._start(run, now_ns, out)

    def _start(self, run: Run, now_ns: int, out: list[Edge]) -> None:
        """Open a session for `run` (ending the holder's other open session first)."""
        current = self._open.get(run.holder)
        if current is not None:
            if (current.start_ns, current.end_ns) == (run.start_ns, run.end_ns):
                return
            self._close(current, now_ns, out)
        s = Session(self._next_id, run.holder, run.start_ns, run.end_ns)
        self._next_id += 1
        self._open[run.holder] = s
        self.dirty = True
        out.append(Edge(START, s, now_ns))

    def _close_ended(self, limit: int, now_ns: int, out: list[Edge]) -> None:
        """End the open sessions that ended at or before `limit`, in order of their ends."""
        ended = [s for s in self._open.values() if s.end_ns <= limit]
        for s in sorted(ended, key=lambda s: s.end_ns):
            self._close(s, now_ns, out)

    def _close(self, s: Session, now_ns: int, out: list[Edge]) -> None:
        """End one open session and forget its chains."""
        del self._open[s.holder]
        for key in [k for k, (sid, _) in self._chains.items() if sid == s.id]:
            del self._chains[key]
        self.dirty = True
        out.append(Edge(END, s, now_ns))

    # --- chains --------------------------------------------------------------------------

    def link(self, holder: str, variant: str, session: int | None, seq: int) -> int | None:
        """The prev_seq of message `seq` of `variant` routed to `holder` in `session` (None:
        outside every open session, which starts no chain), and take it as the chain's last."""
        if session is None:
            return None
        key = (holder, variant)
        entry = self._chains.get(key)
        if entry is not None and entry[0] == session:
            prev: int | None = entry[1]
        else:
            s = self._open.get(holder)
            prev = GAP_SEQ if s is not None and s.id == session and s.gap else None
        self._chains[key] = (session, seq)
        self.dirty = True
        return prev


def _same_session(schedule: SlotSchedule, s: Session, at: int) -> Run | None:
    """The run of `schedule` that session `s` has become: the holder's last run overlapping the
    part of `s` routed past by `at` (moved, extended or shortened), or None (cancelled)."""
    probe = max(s.start_ns, min(at, s.end_ns - 1))  # the last instant of it routed past
    first = schedule.run_at_ns(s.start_ns)
    candidates = ([first] if first is not None else []) + list(
        schedule.runs_starting(s.start_ns, probe)
    )
    mine = [r for r in candidates if r.holder == s.holder and r.end_ns > s.start_ns]
    return mine[-1] if mine else None
