"""What the multiplexer tells its one consumer: frozen events, one type per happening.

Every event names its variant. Port events carry the monotonic and wall time they happened
at; a received frame carries the time of the read that completed it (taken once per read,
right after the bytes arrived). Health transitions map onto events one to one:
down -> up is `PortOpened`, silent -> up is `PortUp`, up -> silent is `PortSilent`,
anything -> down is `PortOpenFailed`, `PortLost` or `PortClosed`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.p1 import Frame


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A whole frame from '/' through its CRC line; `frame.crc_ok` says whether it holds."""

    variant: str
    frame: Frame
    received_monotonic_ns: int
    """time.monotonic_ns() right after the read that delivered the frame's last byte."""
    received_wall_ns: int
    """time.time_ns() at the same moment (may be wrong until the clock syncs)."""


class FrameEnd(enum.Enum):
    """What ended a frame that never completed."""

    NEXT_FRAME = "next_frame"
    """A new '/' began the next frame."""
    QUIET_LINE = "quiet_line"
    """No byte came for the port's `truncate_after_s` inside the frame."""
    PORT_LOST = "port_lost"
    """The port failed (unplugged, hung up) inside the frame."""
    PORT_CLOSED = "port_closed"
    """The port was closed on purpose (removed, changed, stopping) inside the frame."""


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """A started frame that never completed: 'oversize' (no end within the bound) or
    'truncated' (cut short), with its bytes and the time of the read that brought its last byte
    (what it is routed by, as a received frame is)."""

    variant: str
    reason: str
    """'oversize' or 'truncated'."""
    size: int
    """Its whole length in bytes (an oversize one counted up to where it ended)."""
    received_monotonic_ns: int
    received_wall_ns: int
    raw: bytes
    """Its bytes from '/' on, at most the port's `max_frame_size` (parity stripped, as framed)."""
    ended_by: FrameEnd


@dataclass(frozen=True, slots=True)
class PortOpened:
    """The port is open and being read (down -> up); `reconnect` after it was lost."""

    variant: str
    url: str
    profile: str
    """The serial profile set, e.g. '115200 8N1' (meaningless for socket:// URLs)."""
    request_line: str | None
    """'rts' or 'dtr' when one is configured."""
    request_line_held: bool | None
    """True once set high; False when the device has no modem lines (a pty); None if unused."""
    reconnect: bool
    at_monotonic_ns: int
    at_wall_ns: int


@dataclass(frozen=True, slots=True)
class PortOpenFailed:
    """An attempt to open the port failed; reported on the first failure and when the error
    changes, not on every retry."""

    variant: str
    url: str
    error: str
    attempts: int
    """Failed attempts in a row so far."""
    retry_in_s: float
    """When the port is looked at again: the reopen delay; for a missing path, the presence
    check's interval (it is opened as soon as it appears)."""
    at_monotonic_ns: int
    at_wall_ns: int


@dataclass(frozen=True, slots=True)
class PortLost:
    """The open port failed (unplugged, hung up, network server gone); it will be reopened."""

    variant: str
    url: str
    error: str
    at_monotonic_ns: int
    at_wall_ns: int


@dataclass(frozen=True, slots=True)
class PortClosed:
    """The port was closed on purpose: 'removed', 'changed' (it reopens at once) or 'stopped'."""

    variant: str
    url: str
    reason: str
    at_monotonic_ns: int
    at_wall_ns: int


@dataclass(frozen=True, slots=True)
class PortSilent:
    """The port is open but no valid telegram came for 3 expected intervals (up -> silent)."""

    variant: str
    silent_for_s: float
    expected_interval_s: float
    at_monotonic_ns: int
    at_wall_ns: int


@dataclass(frozen=True, slots=True)
class PortUp:
    """Valid telegrams flow again after a silence (silent -> up)."""

    variant: str
    at_monotonic_ns: int
    at_wall_ns: int


PortEvent = PortOpened | PortOpenFailed | PortLost | PortClosed | PortSilent | PortUp
MuxEvent = FrameReceived | FrameDropped | PortEvent
