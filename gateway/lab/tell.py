"""Telling the rigs: each rig's whole schedule, retained on `p1/R/schedule`, with a rising version.

Run under the store's write lock, so that two lab commands never publish one rig's schedule
at once (the higher version always lands last): read what the broker retains about every rig
(its schedule's version, what the rig applied, whether it is connected), decide per rig which
version goes out (`schedule.version_to_tell`), publish it, and record what the broker took.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import LabBrokerError
from gateway.lab import schedule
from gateway.lab.dynsec import AdminLink
from gateway.lab.rules import Policy
from gateway.lab.schedule import RigView
from gateway.lab.store import Store


@dataclass(frozen=True, slots=True)
class RigState:
    """One rig after telling: the store's record and what the broker showed."""

    rig: str
    version: int
    told: int
    sent: int | None
    view: RigView


def pending(store: Store) -> bool:
    """Whether some rig's schedule changed since the broker last took it (known without the
    broker; a broker that lost or outran the store shows only once connected)."""
    with store.read() as tx:
        return any(r.version > r.told for r in tx.rigs())


def tell(
    store: Store,
    link: AdminLink,
    *,
    prefix: str,
    policy: Policy,
    rigs: Iterable[str],
    now: datetime,
) -> list[RigState]:
    """Tell every rig of `rigs` (and every rig the store knows) that needs it; each rig's
    state afterwards."""
    states: list[RigState] = []
    failure: LabBrokerError | None = None
    with store.write() as tx:
        views = schedule.read_views(prefix, link.retained(schedule.filters(prefix)))
        names = list(dict.fromkeys([*rigs, *(r.name for r in tx.rigs())]))
        for name in names:
            view = views.get(name, RigView())
            record = tx.rig(name)
            if record is None:
                if view.applied is None and view.schedule is None:
                    states.append(RigState(name, 0, 0, None, view))
                    continue
                record = tx.ensure_rig(name, now)
            if view.applied is not None:
                tx.set_applied(name, view.applied, view.refused, now)
            version = (
                None if failure else schedule.version_to_tell(record.version, record.told, view)
            )
            if version is not None:
                bookings = [b.booking for b in tx.bookings(rig=name, ending_after=now)]
                body = schedule.payload(name, version, bookings, policy.zone)
                try:
                    link.publish_retained(schedule.topic(prefix, name, "schedule"), body)
                except LabBrokerError as exc:
                    failure, version = exc, None  # keep what was told; the rest next time
                else:
                    tx.set_told(name, version, now)
            after = tx.rig(name)
            assert after is not None
            states.append(RigState(name, after.version, after.told, version, view))
    if failure is not None:
        raise failure
    return states
