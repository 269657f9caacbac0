"""dsmr_parser as the oracle: every line it parses in a corpus telegram reads the same from us.

For each corpus telegram whose CRC holds (and each CRC-less DSMR 2.2 / 3 one), dsmr_parser's
TelegramParser parses the telegram with the spec our decoder detected. Its parse is a loop over
the spec's objects, each object's regex matched against the telegram and each match handed to
the object's value parser; this test runs that same loop (with dsmr_parser's own objects) so
that every matched LINE can be compared with our object for the line's OBIS code: value, unit
and time, value by value (dsmr_parser gives UTC datetimes: instants are compared).

Where dsmr_parser is wrong, the exception is named here and our documented behaviour is
asserted instead; a final test checks that each named exception really occurs in the corpus.
- PLACEHOLDER: `700101010000W` (empty NL M-Bus channel) and `000101000001W` (dummy power-failure
  entry) are placeholders; dsmr_parser makes them 1970-01-01 and 2000-01-01, we give None.
- FLAG_AGAINST_CALENDAR: an S/W flag that contradicts the Brussels calendar (the e-MUCS 1.7.1
  spec example writes `200301000000S` for 1 March): dsmr_parser ignores the flag outside the
  repeated October hour, we take the offset the flag says (S = +02:00, W = +01:00).
- LOWER_CASE_FLAG: a Landis+Gyr E350 writes `150701190000s`; dsmr_parser reads no time (None),
  we read the lower-case flag like an upper-case one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from dsmr_parser.exceptions import ParseError
from dsmr_parser.objects import CosemObject, MBusObject, ProfileGenericObject
from dsmr_parser.parsers import (
    CosemParser,
    MaxDemandParser,
    MBusParser,
    ProfileGenericParser,
    TelegramParser,
)

from gateway import corpus
from gateway.p1 import PLACEHOLDER_DIGITS, Frame, Framer, decode_telegram
from gateway.p1.specs import matching_names, plan_for, spec_definition

PLACEHOLDER = "PLACEHOLDER"
FLAG_AGAINST_CALENDAR = "FLAG_AGAINST_CALENDAR"
LOWER_CASE_FLAG = "LOWER_CASE_FLAG"
DOCUMENTED_EXCEPTIONS = {PLACEHOLDER, FLAG_AGAINST_CALENDAR, LOWER_CASE_FLAG}

_FLAG_OFFSET = {"S": timedelta(hours=2), "W": timedelta(hours=1)}
_GROUP = re.compile(r"\(([^()]*)\)")


def _frames(*statuses: corpus.CrcStatus) -> Iterator[Any]:
    """(id, raw) of every frame of the corpus files with these CRC statuses whose CRC holds."""
    for entry in corpus.with_crc(*statuses):
        for index, event in enumerate(Framer().feed(entry.read())):
            if isinstance(event, Frame) and event.crc_ok is not False:
                yield pytest.param(event.raw, id=f"{entry.name.removesuffix('.txt')}#{index}")


VALID_FRAMES = list(_frames(corpus.CrcStatus.VALID))
CRC_LESS_FRAMES = list(_frames(corpus.CrcStatus.ABSENT))


def _instant(text: str | None) -> datetime | None:
    """An RFC 3339 string as an aware datetime (None stays None)."""
    return None if text is None else datetime.fromisoformat(text)


def _check_time(meter_text: str, theirs: datetime | None, ours: str | None) -> str | None:
    """Assert our time for `meter_text` against dsmr_parser's; return the exception applied."""
    digits, flag = meter_text[:12], meter_text[12:]
    if digits in PLACEHOLDER_DIGITS:
        assert ours is None
        return PLACEHOLDER if theirs is not None else None
    if flag in ("s", "w"):
        assert theirs is None
        ours_instant = _instant(ours)
        assert ours_instant is not None
        assert ours_instant.utcoffset() == _FLAG_OFFSET[flag.upper()]
        return LOWER_CASE_FLAG
    if theirs is None:
        assert ours is None
        return None
    ours_instant = _instant(ours)
    assert ours_instant is not None
    if flag and ours_instant != theirs:
        # The flag contradicts the calendar: ours follows the flag, dsmr_parser the calendar.
        assert ours_instant.utcoffset() == _FLAG_OFFSET[flag]
        assert abs(ours_instant - theirs) == timedelta(hours=1)
        calendar = theirs.astimezone(ours_instant.tzinfo).replace(tzinfo=None)
        assert calendar != ours_instant.replace(tzinfo=None)  # the same wall time, other offset
        return FLAG_AGAINST_CALENDAR
    assert ours_instant == theirs
    return None


def _same_number(theirs: Any, ours: Any) -> None:
    """The same value, of the same type; Decimals with the same digits (repr), not just equal."""
    assert type(ours) is type(theirs)
    assert repr(ours) == repr(theirs)


def _compare_line(parser: Any, theirs: Any, ours: dict[str, Any], line: str) -> list[str]:
    """Compare dsmr_parser's object for one line with ours; return the exceptions applied."""
    groups = _GROUP.findall(line)
    applied: list[str | None] = []
    if isinstance(parser, MaxDemandParser):
        assert isinstance(theirs, list)
        assert len(ours["value"]) == len(theirs)
        for index, (peak, entry) in enumerate(zip(theirs, ours["value"], strict=True)):
            base = 3 + 3 * index
            applied.append(_check_time(groups[base], peak.datetime, entry["month"]))
            applied.append(_check_time(groups[base + 1], peak.occurred, entry["time"]))
            _same_number(peak.value, entry["value"])
            assert entry["unit"] == peak.unit
    elif isinstance(parser, ProfileGenericParser):
        assert isinstance(theirs, ProfileGenericObject)
        assert len(ours["value"]) == len(theirs.buffer)
        for index, (event, entry) in enumerate(zip(theirs.buffer, ours["value"], strict=True)):
            applied.append(_check_time(groups[2 + 2 * index], event.datetime, entry["time"]))
            _same_number(event.value, entry["value"])
            assert entry["unit"] == event.unit
    elif isinstance(parser, MBusParser):
        assert isinstance(theirs, MBusObject)
        applied.append(_check_time(groups[0], theirs.datetime, ours["time"]))
        _same_number(theirs.value, ours["value"])
        assert ours["unit"] == theirs.unit
    else:
        assert isinstance(parser, CosemParser) and isinstance(theirs, CosemObject)
        if isinstance(theirs.value, datetime) or (theirs.value is None and ours["value"]):
            applied.append(_check_time(groups[0], theirs.value, ours["value"]))
        else:
            _same_number(theirs.value, ours["value"])
        assert ours["unit"] == theirs.unit
    return [a for a in applied if a is not None]


def _oracle_spec(spec: str) -> dict[str, Any]:
    """The dsmr_parser spec, with the DLMS-encryption flag off (the corpus holds plain text)."""
    definition = dict(spec_definition(spec))
    definition["general_global_cipher"] = False
    return definition


def compare_with_oracle(raw: bytes) -> tuple[int, list[str]]:
    """Compare every line dsmr_parser parses in `raw`; return (lines compared, exceptions)."""
    telegram = decode_telegram(raw)
    text = raw.decode("latin-1")
    spec = _oracle_spec(telegram.spec)
    crc_less = b"!\r\n" in raw or not re.search(rb"![0-9A-Fa-f]", raw)
    parsed = TelegramParser(spec, apply_checksum_validation=not crc_less).parse(text)
    compared, applied = 0, []
    for obj in spec["objects"]:
        pattern = re.compile(obj["obis_reference"], re.DOTALL | re.MULTILINE)
        for index, line in enumerate(pattern.findall(text)):
            try:
                theirs = obj["value_parser"].parse(line)
            except ParseError:
                continue  # dsmr_parser itself ignores the line (logs it)
            if index == 0:  # the loop above is TelegramParser.parse's: its first result agrees
                assert obj["obis_reference"] in parsed
            code = line.partition("(")[0]
            ours = telegram.objects[code]
            assert obj["value_name"] in matching_names(telegram.spec, code)
            assert ours["name"] == plan_for(telegram.spec, code).name
            applied += _compare_line(obj["value_parser"], theirs, ours, line)
            compared += 1
    return compared, applied


@pytest.mark.parametrize("raw", VALID_FRAMES)
def test_every_line_dsmr_parser_reads_matches_ours(raw: bytes) -> None:
    """Each line dsmr_parser parses in a CRC-valid corpus telegram gets our value, unit, time."""
    compared, _ = compare_with_oracle(raw)
    assert compared >= 5


@pytest.mark.parametrize("raw", CRC_LESS_FRAMES)
def test_crc_less_telegrams_match_dsmr_parser_too(raw: bytes) -> None:
    """The same comparison for the CRC-less (DSMR 2.2 / 3, Q3D) corpus telegrams."""
    compared, _ = compare_with_oracle(raw)
    assert compared >= 5


def test_the_documented_exceptions_all_occur_and_no_other() -> None:
    """Every named disagreement with dsmr_parser occurs in the corpus; no unnamed one does."""
    applied: set[str] = set()
    for param in VALID_FRAMES + CRC_LESS_FRAMES:
        applied.update(compare_with_oracle(param.values[0])[1])
    assert applied == DOCUMENTED_EXCEPTIONS


def test_the_oracle_covers_the_main_specs() -> None:
    """The compared telegrams span NL, BE and the other dsmr_parser families."""
    specs = {decode_telegram(p.values[0]).spec for p in VALID_FRAMES + CRC_LESS_FRAMES}
    assert {"V2_2", "V4", "V5", "BELGIUM_FLUVIUS", "LUXEMBOURG_SMARTY", "SWEDEN"} <= specs
    assert {"Q3D", "SAGEMCOM_T210_D_R", "ISKRA_IE", "EON_HUNGARY"} <= specs


def test_decimal_values_keep_the_meters_digits() -> None:
    """A value like 000301.548 becomes Decimal('301.548'): str() drops only leading zeros."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT").read()
    value = decode_telegram(raw).objects["1-0:1.8.1"]["value"]
    assert isinstance(value, Decimal) and str(value) == "301.548"
