"""Notices to the testers: their ids, topics and payloads, for the lab and the gateway alike.

Pure: no IO, no clock (times are passed in), nothing of the lab, the daemon or the publisher,
so both sides import it. A notice id is `YYYYMMDDTHHMMSSffffffZ-WRITER-RANDOM`: the UTC time
to the microsecond (ids sort by time as text), the writer (`lab`, or the rig id of the gateway
that wrote it) and 8 random hex digits, so two writers under `p1/R/notice/` never collide.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from gateway.errors import IdentifierError

#: The writer and the topic level of the lab's own notices (`p1/lab/notice/ID`).
LAB = "lab"
#: MQTT 5 message expiry of a notice: old ones fade from the broker.
MESSAGE_EXPIRY_SECONDS = 180 * 24 * 3600
#: What a notice says it is: posted by an operator, or what a gateway saw change on a meter.
KINDS = frozenset({"operator", "meter", "firmware", "spec", "codes"})

NOTICE_ID_RE = re.compile(r"\d{8}T\d{6}\d{6}Z-[a-z0-9][a-z0-9-]{0,31}-[0-9a-f]{8}")


def random_token() -> str:
    """Eight random hex digits, the last part of a notice id."""
    return secrets.token_hex(4)


def notice_id(at: datetime, writer: str, token: str) -> str:
    """The id of a notice written at `at` (aware) by `writer` with `token` (8 hex digits)."""
    if at.tzinfo is None:
        raise ValueError("a notice's time must be aware")
    ident = f"{at.astimezone(UTC):%Y%m%dT%H%M%S%f}Z-{writer}-{token}"
    return validate_notice_id(ident)


def validate_notice_id(value: object) -> str:
    """Return the notice id unchanged if it has the form above, else raise IdentifierError."""
    if not isinstance(value, str) or NOTICE_ID_RE.fullmatch(value) is None:
        raise IdentifierError(f"invalid notice id {value!r}: must be YYYYMMDDTHHMMSSffffffZ-W-RAND")
    return value


def notice_topic(prefix: str, rig: str | None, ident: str) -> str:
    """Where a notice is retained: `PREFIX/R/notice/ID` about rig R, else `PREFIX/lab/notice/ID`."""
    return f"{prefix}/{rig or LAB}/notice/{ident}"


def notice_payload(
    ident: str,
    at: datetime,
    rig: str | None,
    kind: str,
    text: str,
    *,
    variant: str | None = None,
    before: Any = None,
    after: Any = None,
) -> dict[str, Any]:
    """A notice's JSON object: id, at (RFC 3339 UTC), rig (None: lab-wide), kind, text, and
    variant, before, after where given."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    body: dict[str, Any] = {
        "id": ident,
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "rig": rig,
    }
    if variant is not None:
        body["variant"] = variant
    body["kind"] = kind
    body["text"] = text
    if before is not None:
        body["before"] = before
    if after is not None:
        body["after"] = after
    return body
