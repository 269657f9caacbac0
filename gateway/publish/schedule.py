"""The slot schedule: who holds the rig at a given instant. Pure; replaced whole on reload."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import IdentifierError
from gateway.errors import ScheduleError as ScheduleError  # raised here; re-exported for callers
from gateway.identifiers import validate_holder

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_ns(value: datetime) -> int:
    """Nanoseconds since the Unix epoch of a timezone-aware datetime, exactly (no float)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()} has no UTC offset")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


@dataclass(frozen=True, slots=True)
class Slot:
    """A test slot: `holder` receives the telegrams received in [start, end)."""

    holder: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Run:
    """A holder's run of back-to-back slots as one span [start_ns, end_ns): one session."""

    holder: str
    start_ns: int
    end_ns: int


class SlotSchedule:
    """An immutable, validated set of non-overlapping slots, searched in O(log n)."""

    __slots__ = ("_ends", "_holders", "_run_starts", "_runs", "_slots", "_starts")

    def __init__(self, slots: Iterable[Slot] = ()):
        items = sorted(slots, key=lambda s: (s.start, s.end))
        problems: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        for i, slot in enumerate(items):
            try:
                validate_holder(slot.holder)
            except IdentifierError as exc:
                problems.append(str(exc))
            try:
                start, end = datetime_to_ns(slot.start), datetime_to_ns(slot.end)
            except ValueError as exc:
                problems.append(f"slot of {slot.holder!r}: {exc}")
                continue
            if start >= end:
                problems.append(
                    f"slot of {slot.holder!r}: start {slot.start.isoformat()} is not before "
                    f"end {slot.end.isoformat()}"
                )
                continue
            if ends and start < ends[-1]:
                prev = items[i - 1]
                problems.append(
                    f"slot of {slot.holder!r} ({slot.start.isoformat()} to {slot.end.isoformat()})"
                    f" overlaps slot of {prev.holder!r} ({prev.start.isoformat()} to "
                    f"{prev.end.isoformat()})"
                )
                continue
            starts.append(start)
            ends.append(end)
        if problems:
            raise ScheduleError("; ".join(problems))
        self._slots = tuple(items)
        self._starts = starts
        self._ends = ends
        self._holders = [s.holder for s in items]
        runs: list[Run] = []
        for holder, start, end in zip(self._holders, starts, ends, strict=True):
            if runs and runs[-1].holder == holder and runs[-1].end_ns == start:
                runs[-1] = Run(holder, runs[-1].start_ns, end)
            else:
                runs.append(Run(holder, start, end))
        self._runs = tuple(runs)
        self._run_starts = [r.start_ns for r in runs]

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The slots, sorted by start."""
        return self._slots

    def __len__(self) -> int:
        """The number of slots."""
        return len(self._slots)

    def holder_at_ns(self, wall_ns: int) -> str | None:
        """The holder of the slot containing `wall_ns` (ns since the epoch), or None."""
        i = bisect.bisect_right(self._starts, wall_ns) - 1
        if i >= 0 and wall_ns < self._ends[i]:
            return self._holders[i]
        return None

    def holder_at(self, when: datetime) -> str | None:
        """The holder of the slot containing the aware datetime `when` ([start, end)), or None."""
        return self.holder_at_ns(datetime_to_ns(when))

    def slot_at(self, when: datetime) -> Slot | None:
        """The slot containing the aware datetime `when` ([start, end)), or None."""
        wall_ns = datetime_to_ns(when)
        i = bisect.bisect_right(self._starts, wall_ns) - 1
        return self._slots[i] if i >= 0 and wall_ns < self._ends[i] else None

    @property
    def runs(self) -> tuple[Run, ...]:
        """The holders' runs of back-to-back slots (each one session), sorted by start."""
        return self._runs

    def run_at_ns(self, wall_ns: int) -> Run | None:
        """The run containing `wall_ns` ([start, end)), or None."""
        i = bisect.bisect_right(self._run_starts, wall_ns) - 1
        if i >= 0 and wall_ns < self._runs[i].end_ns:
            return self._runs[i]
        return None

    def runs_starting(self, after_ns: int, upto_ns: int) -> tuple[Run, ...]:
        """The runs that start in (after_ns, upto_ns], in order."""
        lo = bisect.bisect_right(self._run_starts, after_ns)
        hi = bisect.bisect_right(self._run_starts, upto_ns)
        return self._runs[lo:hi]

    def next_run_start(self, after_ns: int) -> int | None:
        """The first run start after `after_ns`, or None."""
        i = bisect.bisect_right(self._run_starts, after_ns)
        return self._run_starts[i] if i < len(self._run_starts) else None

    def merged(self) -> tuple[Slot, ...]:
        """The slots with back-to-back slots of one holder joined into one (for reports)."""
        out: list[Slot] = []
        for slot in self._slots:
            if out and out[-1].holder == slot.holder and out[-1].end == slot.start:
                out[-1] = Slot(slot.holder, out[-1].start, slot.end)
            else:
                out.append(slot)
        return tuple(out)
