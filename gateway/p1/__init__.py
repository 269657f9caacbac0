"""The sans-IO P1 engine: bytes in, frames and decoded telegrams out.

Nothing here opens a port, reads a clock or logs. `Framer` cuts a byte stream into frames and
checks their CRC; `decode` turns one whole telegram into its objects mapping.
"""

from gateway.p1.crc import crc16, crc_hex
from gateway.p1.decoder import DecodedObject, decode, decode_telegram
from gateway.p1.framer import (
    DEFAULT_MAX_FRAME_SIZE,
    DroppedFrame,
    DropReason,
    Frame,
    Framer,
    FramerCounters,
    FramerEvent,
)
from gateway.p1.specs import AUTO, SPEC_NAMES, check_spec_name, detect_spec, version_line
from gateway.p1.telegram import Telegram, TelegramObject
from gateway.p1.timestamps import DEFAULT_ZONE, PLACEHOLDER_DIGITS

__all__ = [
    "AUTO",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_ZONE",
    "PLACEHOLDER_DIGITS",
    "SPEC_NAMES",
    "DecodedObject",
    "DropReason",
    "DroppedFrame",
    "Frame",
    "Framer",
    "FramerCounters",
    "FramerEvent",
    "Telegram",
    "TelegramObject",
    "check_spec_name",
    "crc16",
    "crc_hex",
    "decode",
    "decode_telegram",
    "detect_spec",
    "version_line",
]
