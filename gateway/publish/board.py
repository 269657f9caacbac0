"""The board: what the retained `schedule` and `calendar` topics say now. Pure; no IO, no clock.

Each holder's schedule lists its own current and coming slots (ends after now), unmerged; the
rig's calendar lists its busy times without names (touching or overlapping slots joined). Both
change when the schedule does and when a slot ends (it drops off the lists). A holder whose list
becomes empty is told so once (`"slots": []`) and then forgotten. What a holder was last told,
and since when (`updated_at`), survives restarts (`EdgeState.announced`), so an unchanged
schedule is republished byte for byte after a restart and a holder dropped from the schedule
while the gateway was down still gets its empty list.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.publish import payload as pl
from gateway.publish.schedule import SlotSchedule, datetime_to_ns
from gateway.publish.sessions import Announced
from gateway.publish.topics import TopicBuilder

Span = tuple[int, int]


class Board:
    """Each holder's announced slots and the rig's busy times; see the module docstring."""

    def __init__(self, topics: TopicBuilder, announced: Iterable[Announced] = ()):
        self.topics = topics
        self._known: dict[str, Announced] = {a.holder: a for a in announced}
        self._stale = True
        self._next_change: int | None = None
        self.dirty = False
        """What a restart must know changed since the last `snapshot`."""

    def reschedule(self) -> None:
        """The schedule changed: refresh at the next chance."""
        self._stale = True

    def due(self, now_ns: int) -> bool:
        """Whether a refresh is due at `now_ns` (the schedule changed, or a slot ended)."""
        return self._stale or (self._next_change is not None and now_ns >= self._next_change)

    def messages(self, schedule: SlotSchedule, now_ns: int) -> list[tuple[str, bytes]]:
        """The retained (topic, payload) of every holder's schedule and of the calendar as of
        `now_ns` (see `refresh`)."""
        entries, busy = self.refresh(schedule, now_ns)
        rig, topics = self.topics.rig, self.topics
        out = [
            (topics.schedule(a.holder), pl.schedule_payload(rig, a.holder, a.slots, a.updated_ns))
            for a in entries
        ]
        out.append((topics.calendar(), pl.calendar_payload(rig, busy)))
        return out

    def refresh(
        self, schedule: SlotSchedule, now_ns: int
    ) -> tuple[list[Announced], tuple[Span, ...]]:
        """Every holder's list as of `now_ns` (a changed one dated `now_ns`), and the rig's busy
        times; holders told `[]` before and still without slots are left out."""
        lists: dict[str, list[Span]] = {}
        spans: list[Span] = []
        for slot in schedule.slots:
            start, end = datetime_to_ns(slot.start), datetime_to_ns(slot.end)
            if end > now_ns:
                lists.setdefault(slot.holder, []).append((start, end))
                spans.append((start, end))
        out = []
        for holder in sorted(set(lists) | set(self._known)):
            slots = tuple(lists.get(holder, ()))
            old = self._known.get(holder)
            entry = old
            if old is None or old.slots != slots:
                entry = Announced(holder, slots, now_ns)
                self.dirty = True
            assert entry is not None
            out.append(entry)
            if slots:
                self._known[holder] = entry
            else:
                self._known.pop(holder, None)  # told `[]` (now or before): nothing to keep
        self._next_change = min((end for _, end in spans), default=None)
        self._stale = False
        return out, busy_times(spans)

    def snapshot(self) -> tuple[Announced, ...]:
        """The holders with slots announced, for the next commit (clears `dirty`)."""
        self.dirty = False
        return tuple(self._known[h] for h in sorted(self._known))


def busy_times(spans: Iterable[Span]) -> tuple[Span, ...]:
    """The spans joined where they touch or overlap, in order."""
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)
