"""decode_telegram(crc_verified=True) trusts the Framer's CRC check instead of repeating it."""

from __future__ import annotations

import pytest

from gateway import corpus
from gateway.errors import ChecksumError
from gateway.p1 import Frame, Framer, crc_hex, decode_telegram


def framed(name: str) -> Frame:
    """The last whole frame of a corpus file, as the Framer delivers it."""
    frames = [e for e in Framer().feed(corpus.entry(name).read()) if isinstance(e, Frame)]
    return frames[-1]


def test_verified_frame_decodes_like_an_unverified_one() -> None:
    """With a good CRC, skipping the second check changes nothing in the result."""
    frame = framed("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT")
    assert frame.crc_ok is True
    assert decode_telegram(frame.raw, crc_verified=True) == decode_telegram(frame.raw)


def test_the_check_is_skipped_only_when_asked() -> None:
    """A bad-CRC frame raises ChecksumError unless the caller says it was already checked."""
    frame = framed("dsmrreader_dsmr-reader__TestDataloggerCrcError")
    assert frame.crc_ok is False
    with pytest.raises(ChecksumError):
        decode_telegram(frame.raw)
    assert decode_telegram(frame.raw, crc_verified=True).objects


def test_frame_carries_the_crc_it_computed() -> None:
    """A frame with a CRC carries the CRC of its bytes, so nobody computes it again."""
    bad = framed("dsmrreader_dsmr-reader__TestDataloggerCrcError")
    good = framed("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT")
    assert f"{bad.crc_computed:04X}" == crc_hex(bad.body) != bad.crc_given
    assert good.crc_computed == int(good.crc_given or "", 16)
    assert framed("ndokter_dsmr_parser__TELEGRAM_V2_2").crc_computed is None
