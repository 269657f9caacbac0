"""What the holder is told about a frame that is no telegram: its reason code and text. Pure.

Every such frame goes to the holder's `invalid` topic as evidence, with a `reason_code` a
program can switch on and a `reason` a person can read: a CRC mismatch, a frame that cannot be
read as a telegram, one cut short (by a new '/', by the line going quiet, by the port failing),
one over the size bound. A frame cut short because the gateway itself closed the port (a
variant removed or changed, the daemon stopping) is not the meter's doing: only counted.

A line that spews '/' (a wrong baud rate, a broken adapter) could make thousands of "frames"
a second, each one byte long. `EvidenceBudget` lets each port send at most `EVIDENCE_RATE`
dropped frames a second (bursts of `EVIDENCE_BURST`) as evidence; the rest are only counted,
so one broken port never floods the reader thread, the spool or the tester. CRC mismatches are
whole telegrams, at the meter's own pace: they are not budgeted.
"""

from __future__ import annotations

from gateway.mux import FrameDropped, FrameEnd
from gateway.p1 import Frame

#: Dropped frames a port may send as evidence per second, and in one burst.
EVIDENCE_RATE = 10.0
EVIDENCE_BURST = 20

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


class EvidenceBudget:
    """A token bucket per port: how many dropped frames it may send as evidence. Pure: the
    caller passes each frame's reception time. Not thread-safe (the reader thread's own)."""

    def __init__(self, rate: float = EVIDENCE_RATE, burst: int = EVIDENCE_BURST) -> None:
        self._rate_per_ns = rate / 1e9
        self._burst = float(burst)
        self._ports: dict[str, tuple[float, int]] = {}
        """Per variant: the tokens left and when they were counted."""

    def allow(self, variant: str, now_ns: int) -> bool:
        """Whether a dropped frame of `variant` received at `now_ns` may go out; takes a token."""
        tokens, at = self._ports.get(variant, (self._burst, now_ns))
        tokens = min(self._burst, tokens + max(0, now_ns - at) * self._rate_per_ns)
        allowed = tokens >= 1.0
        self._ports[variant] = (tokens - 1.0 if allowed else tokens, now_ns)
        return allowed
