"""What each rig is told, pure: its schedule's payload, which version goes out, what it says back.

`p1/R/schedule` (retained): `{"rig", "version", "slots": [{"holder", "start", "end"}]}`, the
rig's current and coming bookings by start, times RFC 3339 on the lab's wall clock. The rig
answers on `p1/R/schedule/applied` (retained): `{"version": N}` or
`{"version": N, "refused": "reason"}`.

A rig needs telling when the store's schedule is newer than what the broker acknowledged, when
the broker's retained schedule is not the one the lab told (lost, or from before a restore),
or when the rig applied a version the lab does not know (the lab's store restored from an
older copy): the schedule then goes out above every version seen, since a rig refuses a
version lower than the one it applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo

from gateway.identifiers import RIG_ID_RE
from gateway.lab.rules import Booking, local


@dataclass(frozen=True, slots=True)
class RigView:
    """What the broker holds for one rig: its retained schedule's version, the rig's answer
    on `applied`, its gateway's state and its bridge's."""

    schedule: int | None = None
    applied: int | None = None
    refused: str | None = None
    status: str | None = None
    bridge: str | None = None

    @property
    def connected(self) -> bool | None:
        """The rig's link to this broker: its bridge's state when it has one, else its
        gateway's status; None when the broker has heard neither."""
        if self.bridge is not None:
            return self.bridge == "1"
        if self.status is not None:
            return self.status == "online"
        return None


def topic(prefix: str, rig: str, *rest: str) -> str:
    """`p1/R/...`."""
    return "/".join((prefix, rig, *rest))


def filters(prefix: str) -> list[str]:
    """The retained topics the lab reads about every rig."""
    return [
        f"{prefix}/+/schedule",
        f"{prefix}/+/schedule/applied",
        f"{prefix}/+/status",
        f"{prefix}/+/bridge/state",
    ]


def payload(rig: str, version: int, bookings: Iterable[Booking], zone: tzinfo) -> bytes:
    """The rig's whole schedule as the rig reads it."""
    slots = [
        {
            "holder": b.holder,
            "start": local(b.start, zone).isoformat(),
            "end": local(b.end, zone).isoformat(),
        }
        for b in sorted(bookings, key=lambda b: (b.start, b.id))
        if b.rig == rig
    ]
    body = {"rig": rig, "version": version, "slots": slots}
    return json.dumps(body, separators=(",", ":")).encode()


def _version(text: bytes) -> tuple[int | None, str | None]:
    """A payload's `version` (a non-negative int) and `refused`, when readable."""
    try:
        body = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return None, None
    refused = body.get("refused")
    return version, (str(refused) if refused is not None else None)


def read_views(prefix: str, retained: Mapping[str, bytes]) -> dict[str, RigView]:
    """Each rig's view from the retained messages under `filters(prefix)` (unreadable ones
    are ignored)."""
    fields: dict[str, dict[str, object]] = {}
    head = prefix + "/"
    for name, body in retained.items():
        if not name.startswith(head):
            continue
        rig, _, rest = name[len(head) :].partition("/")
        if RIG_ID_RE.fullmatch(rig) is None:
            continue
        view = fields.setdefault(rig, {})
        if rest == "schedule":
            view["schedule"] = _version(body)[0]
        elif rest == "schedule/applied":
            view["applied"], view["refused"] = _version(body)
        elif rest == "status":
            try:
                state = json.loads(body).get("state")
            except (ValueError, AttributeError):
                state = None
            view["status"] = state if isinstance(state, str) else None
        elif rest == "bridge/state":
            view["bridge"] = body.decode("utf-8", "replace").strip()
    return {rig: RigView(**v) for rig, v in fields.items()}  # type: ignore[arg-type]


def version_to_tell(version: int, told: int, view: RigView) -> int | None:
    """The version to publish a rig's schedule under now, or None when the rig is told.

    `version` is the store's, `told` what the broker last acknowledged from this store.
    """
    seen = max(told, view.schedule or 0, view.applied or 0)
    if version > told:
        return version if version > seen else seen + 1  # a change not yet told
    if told > 0 and view.schedule != told:
        return max(version, seen) + 1  # the broker lost it, or holds one this store did not tell
    if view.applied is not None and view.applied > told:
        return max(version, seen) + 1  # the rig applied a version this store does not know
    return None
