"""What the holder is told about a frame that is no telegram: its reason code and text. Pure.

Every such frame goes to the holder's `invalid` topic as evidence, with a `reason_code` a
program can switch on and a `reason` a person can read: a CRC mismatch, a frame that cannot be
read as a telegram, one cut short (by a new '/', by the line going quiet, by the port failing),
one over the size bound. A frame cut short because the gateway itself closed the port (a
variant removed or changed, the daemon stopping) is not the meter's doing: only counted.
"""

from __future__ import annotations

from gateway.mux import FrameDropped, FrameEnd
from gateway.p1 import Frame

CRC_MISMATCH = "crc_mismatch"
UNDECODABLE = "undecodable"
TRUNCATED = "truncated"
OVERSIZE = "oversize"

_TRUNCATED_BY = {
    FrameEnd.NEXT_FRAME: "cut short by a new '/'",
    FrameEnd.PORT_LOST: "cut short when the port was lost",
}
_OVERSIZE_TO = {
    FrameEnd.NEXT_FRAME: "up to the next '/'",
    FrameEnd.QUIET_LINE: "before the line went quiet",
    FrameEnd.PORT_LOST: "before the port was lost",
}


def crc_reason(frame: Frame) -> str:
    """The reason text of a frame whose CRC does not match."""
    return f"crc mismatch: sent {frame.crc_given}, computed {frame.crc_computed or 0:04X}"


def undecodable_reason(error: Exception) -> str:
    """The reason text of a frame that cannot be read as a telegram."""
    return f"undecodable: {error}"


def drop_reason(event: FrameDropped, truncate_after_s: float) -> tuple[str, str] | None:
    """A dropped frame's (reason_code, reason), or None when it is no evidence (the gateway
    closed the port inside it). `truncate_after_s`: the port's quiet-line bound."""
    if event.ended_by is FrameEnd.PORT_CLOSED:
        return None
    if event.reason == OVERSIZE:
        where = _OVERSIZE_TO[event.ended_by]
        return OVERSIZE, (
            f"oversize: no end within {len(event.raw)} bytes; {event.size} bytes {where}"
        )
    if event.ended_by is FrameEnd.QUIET_LINE:
        how = f"no byte for {truncate_after_s:g} s"
    else:
        how = _TRUNCATED_BY[event.ended_by]
    return TRUNCATED, f"truncated: {how} after {event.size} bytes"
