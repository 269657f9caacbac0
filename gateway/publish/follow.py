"""Following the lab's schedule (`[schedule] source = "mqtt"`): each version judged whole. Pure.

The lab publishes a rig's whole schedule, retained, on `p1/R/schedule`:
`{"rig", "version", "slots": [{"holder", "start", "end"}]}`. A version is read whole or refused
whole: the rig must be this one, the version an integer (0 or more), every holder a valid
identifier, every time RFC 3339 with an offset, each slot's start before its end, and no two
slots overlapping. A version lower than the one applied is refused too, and so answered that
the lab republishes above it: the answer's `version` is then the applied one (the reason names
the refused one). The answer (`p1/R/schedule/applied`, retained) is `{"version": N}` or
`{"version": N, "refused": "reason"}`; N is the version judged (a version that cannot be read
is answered with the applied one: null before any).

An empty payload (the retained schedule cleared) is no version: it is ignored, nothing answered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import IdentifierError, ScheduleError
from gateway.identifiers import validate_holder
from gateway.publish.payload import applied_payload
from gateway.publish.schedule import Slot, SlotSchedule

#: A refusal's reason is cut to this many characters (it goes in a retained answer and a log line).
MAX_REASON = 300


@dataclass(frozen=True, slots=True)
class Version:
    """One valid version of the rig's schedule, and the payload it came in (kept on disk)."""

    version: int
    schedule: SlotSchedule
    payload: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one offered payload comes to: accepted (`taken`) or refused (`refused`)."""

    answer: bytes
    """The `applied` payload to publish, retained."""
    version: int | None
    """The answer's version."""
    taken: Version | None = None
    """The version accepted (None: refused)."""
    refused: str | None = None
    """Why it was refused."""
    changed: bool = False
    """The accepted version's slots differ from the ones applied before: apply it."""
    keep: bool = False
    """The accepted version differs from the one kept on disk: write it."""


def _reason(text: str) -> str:
    """A refusal's reason, bounded."""
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _time(value: Any, where: str) -> datetime:
    """An RFC 3339 time with an offset; ScheduleError otherwise."""
    if not isinstance(value, str):
        raise ScheduleError(f"{where} must be an RFC 3339 time, not {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ScheduleError(f"{where} {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(f"{where} {value!r} has no UTC offset")
    return moment


def _slots(items: Any) -> SlotSchedule:
    """The schedule of a version's `slots` list; ScheduleError names every problem."""
    if not isinstance(items, list):
        raise ScheduleError(f"slots must be a list, not {type(items).__name__}")
    slots, problems = [], []
    for i, item in enumerate(items):
        where = f"slot[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        try:
            holder = item.get("holder")
            if not isinstance(holder, str):
                raise ScheduleError(f"{where}.holder must be a name, not {holder!r}")
            try:
                validate_holder(holder)
            except IdentifierError as exc:
                raise ScheduleError(f"{where}.holder: {exc}") from None
            start = _time(item.get("start"), f"{where}.start")
            end = _time(item.get("end"), f"{where}.end")
            if start >= end:
                raise ScheduleError(f"{where}: start {start.isoformat()} is not before end")
        except ScheduleError as exc:
            problems.append(str(exc))
            continue
        slots.append(Slot(holder, start, end))
    if problems:
        raise ScheduleError("; ".join(problems))
    return SlotSchedule(slots)  # no overlap: ScheduleError otherwise


def read_version(rig: str, payload: bytes) -> Version:
    """A payload of `p1/R/schedule` read whole for rig `rig`; ScheduleError says why not."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ScheduleError("not JSON") from None
    if not isinstance(body, dict):
        raise ScheduleError("not a JSON object")
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ScheduleError(f"version must be an integer of 0 or more, not {version!r}")
    if body.get("rig") != rig:
        raise ScheduleError(f"rig {body.get('rig')!r} is not this rig ({rig})")
    if "slots" not in body:
        raise ScheduleError("no slots")
    return Version(version, _slots(body["slots"]), bytes(payload))


def _offered_version(payload: bytes) -> int | None:
    """The `version` of a payload that may be otherwise invalid, if it can be read."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    version = body.get("version") if isinstance(body, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return None
    return version


class Follower:
    """The schedule version applied, and the judge of each new one. Not thread-safe."""

    def __init__(self, rig: str, applied: Version | None = None):
        self.rig = rig
        self.applied = applied
        """The version routed by (None: none yet: no slots)."""
        self.refused: str | None = None
        """Why the last version offered was refused (None: it was accepted)."""

    @property
    def version(self) -> int | None:
        """The applied version's number."""
        return None if self.applied is None else self.applied.version

    @property
    def schedule(self) -> SlotSchedule:
        """The applied schedule (empty before any)."""
        return SlotSchedule() if self.applied is None else self.applied.schedule

    def answer(self) -> bytes:
        """The `applied` payload for the version applied (at a start, before any offer)."""
        return applied_payload(self.version)

    def offer(self, payload: bytes) -> Verdict | None:
        """Judge one payload of `p1/R/schedule`: a verdict, or None for an empty payload."""
        if not payload:
            return None
        applied = self.applied
        offered = _offered_version(payload)
        if applied is not None and offered is not None and offered < applied.version:
            reason = f"version {offered} is lower than the applied version {applied.version}"
            return self._refuse(applied.version, reason)
        try:
            taken = read_version(self.rig, payload)
        except ScheduleError as exc:
            where = "" if offered is None else f"version {offered}: "
            return self._refuse(offered if offered is not None else self.version, where + str(exc))
        before = self.schedule.slots
        self.applied, self.refused = taken, None
        return Verdict(
            applied_payload(taken.version),
            taken.version,
            taken=taken,
            changed=taken.schedule.slots != before,
            keep=applied is None or applied.payload != taken.payload,
        )

    def _refuse(self, version: int | None, reason: str) -> Verdict:
        """A refusal: nothing changes; the answer says why."""
        reason = _reason(reason)
        self.refused = reason
        return Verdict(applied_payload(version, reason), version, refused=reason)
