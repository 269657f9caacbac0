"""The form every notice shares, whoever writes it (a rig's gateway, the lab).

A notice is one retained message on `p1/R/notice/ID` (about rig R) or `p1/lab/notice/ID`:
`{"id", "at", "rig", "variant", "kind", "text", "before", "after"}`, with an MQTT 5 message
expiry of NOTICE_EXPIRY_S so that old ones fade. Its ID is `YYYYMMDDTHHMMSSffffffZ-<writer>-
<random hex>`: ordered by time as text, and unique across writers (the writer's name and a
random part tell two notices of one microsecond apart).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

#: How long the broker keeps a retained notice (its MQTT 5 message expiry): 180 days.
NOTICE_EXPIRY_S = 180 * 24 * 3600
#: The kinds of notices: a posted one, and what a gateway saw change on a meter.
KINDS = ("operator", "meter", "firmware", "spec", "codes")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9_-]+-[0-9a-f]{8,32}$")


def notice_id(wall_ns: int, writer: str, token: str) -> str:
    """The ID of a notice written at `wall_ns` by `writer`, `token` its random hex part."""
    moment = _EPOCH + timedelta(microseconds=wall_ns // 1000)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-{writer}-{token}"


def valid_notice_id(text: str) -> bool:
    """Whether `text` has the form of a notice ID (it may then be a topic level)."""
    return bool(_ID.fullmatch(text))


def notice_body(
    ident: str,
    at: str,
    rig: str,
    kind: str,
    text: str,
    *,
    variant: str | None = None,
    before: Any = None,
    after: Any = None,
) -> dict[str, Any]:
    """A notice's JSON object; `variant`, `before` and `after` only where they apply."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}")
    body: dict[str, Any] = {"id": ident, "at": at, "rig": rig, "kind": kind, "text": text}
    if variant is not None:
        body["variant"] = variant
    if before is not None:
        body["before"] = before
    if after is not None:
        body["after"] = after
    return body
