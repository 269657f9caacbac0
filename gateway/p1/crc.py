"""CRC-16/ARC, the P1 telegram checksum, through crcmod's C implementation."""

from __future__ import annotations

from collections.abc import Callable

import crcmod.predefined

#: CRC-16/ARC (poly 0x8005 reflected, init 0, no final xor); crcmod calls it 'crc-16'.
crc16: Callable[[bytes], int] = crcmod.predefined.mkPredefinedCrcFun("crc-16")


def crc_hex(body: bytes) -> str:
    """The four upper-case hex digits a meter writes after '!' for `body` ('/' through '!')."""
    return f"{crc16(body):04X}"
