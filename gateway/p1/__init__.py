"""The sans-IO P1 engine: bytes in, frames and decoded telegrams out.

Nothing here opens a port, reads a clock or logs. `Framer` cuts a byte stream into frames and
checks their CRC; `decode` turns one whole telegram into its objects mapping.
"""

from gateway.p1.crc import crc16, crc_hex
from gateway.p1.framer import (
    DEFAULT_MAX_FRAME_SIZE,
    DroppedFrame,
    DropReason,
    Frame,
    Framer,
    FramerCounters,
    FramerEvent,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DropReason",
    "DroppedFrame",
    "Frame",
    "Framer",
    "FramerCounters",
    "FramerEvent",
    "crc16",
    "crc_hex",
]
