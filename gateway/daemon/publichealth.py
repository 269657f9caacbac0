"""The public health of each port (p1/R/health/V, retained, read by every tester). Pure.

It names nothing of the rig's host (`PortHealthSnapshot.to_public_dict`: no device path, no
error text; a down port says why as a category) and, beside the lifetime counters, gives
the counters since the current slot began under `slot_counters`, so a tester never reads the
previous holder's CRC errors as theirs. A slot here is a holder's run of back-to-back slots
(`SlotSchedule.merged`): the counters run on across such a run. Outside every slot
`slot_counters` is null.

The counters since the slot began are the lifetime counters less a baseline taken when the
slot began: the daemon looks at every slot edge (`next_edge_ns`) and at every publication; it
costs the reader thread nothing. A gateway started inside a slot, or a port added during one,
counts from then on (`since` says from when).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway.mux import HealthCounters, PortHealthSnapshot
from gateway.publish import Slot, SlotSchedule
from gateway.publish.schedule import datetime_to_ns
from gateway.timefmt import rfc3339_utc

#: The key of the counters since the current slot began, in the public health.
SLOT_COUNTERS_KEY = "slot_counters"

_COUNTER_NAMES = tuple(f.name for f in dataclasses.fields(HealthCounters))
_ZERO = HealthCounters()


def _runs_ns(schedule: SlotSchedule) -> list[tuple[Slot, int, int]]:
    """The schedule's runs (back-to-back slots of one holder merged), with start and end in ns."""
    return [(r, datetime_to_ns(r.start), datetime_to_ns(r.end)) for r in schedule.merged()]


def run_at(schedule: SlotSchedule, wall_ns: int) -> Slot | None:
    """The run of slots holding the rig at `wall_ns` ([start, end)), or None outside them."""
    for run, start, end in _runs_ns(schedule):
        if start <= wall_ns < end:
            return run
        if start > wall_ns:
            break
    return None


def next_edge_ns(schedule: SlotSchedule, wall_ns: int) -> int | None:
    """The first start or end of a run after `wall_ns` (None: no more edges)."""
    for _run, start, end in _runs_ns(schedule):
        if start > wall_ns:
            return start
        if end > wall_ns:
            return end
    return None


class SlotCounters:
    """Each port's counters at the start of the current run of slots: the baselines."""

    def __init__(self) -> None:
        self._run: tuple[str, int] | None = None
        """The current run as (holder, start ns); None outside every slot."""
        self._base: dict[str, tuple[HealthCounters, int]] = {}
        """Per variant: its counters when the run began (or when counting began) and when."""

    def observe(
        self, run: Slot | None, wall_ns: int, counters: Mapping[str, HealthCounters]
    ) -> None:
        """Look at the ports' counters at `wall_ns`, inside `run` (None: outside every slot).

        A run other than the last one looked at begins now: every port's baseline is its
        counters now. A port first seen in a run counts from zero (it is new since). A port
        whose counters went back (removed and added again) counts from zero, from now.
        """
        key = None if run is None else (run.holder, datetime_to_ns(run.start))
        if key != self._run:
            self._run = key
            since = wall_ns if run is None else max(wall_ns, datetime_to_ns(run.start))
            self._base = {variant: (now, since) for variant, now in counters.items()}
            return
        for variant, now in counters.items():
            base = self._base.get(variant)
            if base is None or any(
                getattr(now, name) < getattr(base[0], name) for name in _COUNTER_NAMES
            ):
                self._base[variant] = (_ZERO, wall_ns)
        for gone in self._base.keys() - counters.keys():
            del self._base[gone]

    def since_slot_start(self, variant: str, counters: HealthCounters) -> dict[str, Any] | None:
        """A port's counters since the current run began, with `since`; None outside slots."""
        if self._run is None:
            return None
        base, since = self._base.get(variant, (_ZERO, self._run[1]))
        out: dict[str, Any] = {"since": rfc3339_utc(since)}
        out.update((name, getattr(counters, name) - getattr(base, name)) for name in _COUNTER_NAMES)
        return out


def public_health(snapshot: PortHealthSnapshot, slots: SlotCounters) -> dict[str, Any]:
    """A port's public health: no host details, lifetime counters, counters since the slot."""
    out = snapshot.to_public_dict()
    out[SLOT_COUNTERS_KEY] = slots.since_slot_start(snapshot.variant, snapshot.counters)
    return out
