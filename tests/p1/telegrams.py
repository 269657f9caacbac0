"""Helpers that build P1 telegrams for tests: CRC computed, CR LF line ends."""

from __future__ import annotations

from gateway.p1 import crc_hex

FLUVIUS_HEADER = "FLU5\\253769484_A"


def telegram(
    *lines: str, header: str = FLUVIUS_HEADER, crc: bool = True, eol: str = "\r\n"
) -> bytes:
    """A whole telegram: '/header', a blank line, the lines, '!' and its CRC (or none)."""
    body = f"/{header}{eol}{eol}" + "".join(line + eol for line in lines) + "!"
    raw = body.encode("latin-1")
    return raw + (crc_hex(raw).encode("ascii") if crc else b"") + eol.encode("ascii")


def belgian(*lines: str) -> bytes:
    """A Fluvius telegram: the version line first, then the given lines."""
    return telegram("0-0:96.1.4(50217)", *lines)
