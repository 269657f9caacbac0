"""Telegram specifications: their names, detecting which one a telegram follows, and the
per-OBIS-code decoding plan derived from dsmr_parser's specifications.

dsmr_parser (`dsmr_parser.telegram_specifications`) is the reference and the vocabulary: each
specification lists objects with an `obis_reference` regex, a parser class and value parsers
coercing to Decimal, int, str or a timestamp. We do not run its parsers; we read those lists,
once per (spec, OBIS code), into a small `Plan` that the decoder applies to the line.

The lists come from `gateway/p1/_spec_table.py`: dsmr_parser's objects as plain rows, generated
by `tools/regen_spec_table.py` (importing dsmr_parser's specifications would import its
`parsers` module, which loads cryptography and dlms_cosem: ~12 MB of RSS for decryption the
daemon never does). tests/p1/test_spec_table.py checks that the table is what the installed
dsmr_parser defines.

Which spec object a code belongs to: the object whose `obis_reference` code pattern (the part
before its `.+?`) matches the code as the meter wrote it, where the match ends at the end of the
code or before a non-digit (so `1-0:1.8.0*255` is 1.8.0 but `0-0:96.1.10` is not 96.1.1). When
several objects match, a pattern that pins the channel (the B field of `A-B:C.D.E`, as in
`\\d-[1-9]:24\\.2\\.[13]` for MBUS_METER_READING or `\\d-0:96\\.1\\.1`) wins over one that
takes any channel (`\\d-\\d:`); among equals, the first in the spec's own order.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from gateway.errors import DecodeError
from gateway.p1._spec_table import SPECS, SpecRow

#: The spec name that asks the decoder to detect the spec from the telegram itself.
AUTO = "auto"

#: Every spec name an explicit `spec=` may give (dsmr_parser's names), sorted.
SPEC_NAMES: tuple[str, ...] = tuple(sorted(SPECS))


def spec_definition(name: str) -> dict[str, Any]:
    """dsmr_parser's specification dict for a spec name; DecodeError for an unknown name.

    Imports dsmr_parser (and its cryptography stack): for tools that run dsmr_parser itself;
    the decoder only needs `check_spec_name`.
    """
    check_spec_name(name)
    from dsmr_parser import telegram_specifications as dsmr_specs

    definition: dict[str, Any] = getattr(dsmr_specs, name)
    return definition


def check_spec_name(name: str) -> str:
    """Return `name` if it is 'auto' or a dsmr_parser spec name; DecodeError otherwise."""
    if name != AUTO and name not in SPECS:
        raise DecodeError(f"unknown telegram spec {name!r}; known: auto, {', '.join(SPEC_NAMES)}")
    return name


# --- Detection ------------------------------------------------------------------------------

_HEX_BYTES = tuple(bytes([c]) for c in b"0123456789abcdefABCDEF")

#: Header prefixes (the identification after '/', compared case-insensitively) of families
#: whose telegrams need a spec of their own, checked before any version line.
_HEADER_FAMILIES: dict[bytes, str] = {
    b"flu": "BELGIUM_FLUVIUS",  # Fluvius (Belgium), e-MUCS: /FLU5\...
    b"lux": "LUXEMBOURG_SMARTY",  # Luxembourg Smarty: /Lux5\... (carries 1-3:0.2.8(42))
    b"esy": "Q3D",  # EasyMeter Q3D (Germany, IEC 62056-21): /ESY5Q3D...
    b"est": "SAGEMCOM_T210_D_R",  # Sagemcom T210-D-r, Energienetze Steiermark: /EST5\...
    b"kam": "SWEDEN",  # Kamstrup (Sweden / Denmark): /KAM5
}


#: Detections decided by the first lines (header, blank line, version line), by those lines.
_DETECTED: dict[bytes, str] = {}
_MAX_DETECTED = 256


def detect_spec(raw: bytes) -> str:
    """The dsmr_parser spec name a telegram follows, from its header and version lines.

    In order: the header families above; Sagemcom T210-D-r ('T210-D-r' in the header); Iskra
    IE.x ('ISK' with '\\2MIE', Ireland / Wallonia); the first version line: Belgian
    `0-0:96.1.4(...)` -> BELGIUM_FLUVIUS, Dutch `1-3:0.2.8(NN)` -> V4 for 4x, V5 from 50 (or
    unreadable), V3 below 40; a Sagemcom `/SAG5` header without version line -> EON_HUNGARY;
    otherwise V5 when the telegram carries a CRC after '!', else V2_2 (dsmr_parser's V3 is
    the same spec). Results decided by the first three lines are cached by those lines.
    """
    start = max(raw.find(b"/"), 0)
    first_lines_end = start
    for _ in range(3):
        newline = raw.find(b"\n", first_lines_end + 1)
        if newline < 0:
            first_lines_end = len(raw)
            break
        first_lines_end = newline
    first_lines = raw[start:first_lines_end]
    spec = _DETECTED.get(first_lines)
    if spec is None:
        spec, decided_by = _detect(raw, start)
        if decided_by <= first_lines_end and len(_DETECTED) < _MAX_DETECTED:
            _DETECTED[first_lines] = spec
    return spec


def _detect(raw: bytes, start: int) -> tuple[str, int]:
    """Detect the spec: (name, index of the end of the bytes that decided it)."""
    end = raw.find(b"\n", start)
    if end < 0:
        end = len(raw)
    header = raw[start + 1 : end].rstrip(b"\r").lower() if raw[start : start + 1] == b"/" else b""
    family = _HEADER_FAMILIES.get(header[:3])
    if family is not None:
        return family, end
    if b"t210-d-r" in header:
        return "SAGEMCOM_T210_D_R", end
    if header.startswith(b"isk") and b"\\2mie" in header:
        return "ISKRA_IE", end
    version = version_line(raw)
    if version is not None:
        kind, value, decided_by = version
        if kind == b"96.1.4":
            return "BELGIUM_FLUVIUS", decided_by
        number = int(value) if value.isascii() and value.isdigit() else 50
        if number >= 50:
            return "V5", decided_by
        return ("V4" if number >= 40 else "V3"), decided_by
    if header.startswith(b"sag"):
        return "EON_HUNGARY", len(raw)
    bang = raw.find(b"!", start)
    has_crc = bang >= 0 and raw[bang + 1 : bang + 2] in _HEX_BYTES
    return ("V5" if has_crc else "V2_2"), len(raw)


_VERSION_MARK = re.compile(rb":(0\.2\.8|96\.1\.4)\(")


def version_line(raw: bytes) -> tuple[bytes, bytes, int] | None:
    """The first version line, `A-B:0.2.8(v)` (NL) or `A-B:96.1.4(v)` (BE): (code, v, end)."""
    found = _VERSION_MARK.search(raw)
    while found is not None:
        at = found.start()
        head = raw[raw.rfind(b"\n", 0, at) + 1 : at]
        if len(head) == 3 and head[1:2] == b"-" and head[::2].isdigit():
            end = raw.find(b")", found.end())
            if end < 0:
                end = len(raw)
            return found.group(1), raw[found.end() : end], end
        found = _VERSION_MARK.search(raw, found.end())
    return None


# --- Plans ----------------------------------------------------------------------------------


class Kind(enum.IntEnum):
    """How a line is decoded; the first five have a fast path in the decoder."""

    DECIMAL = 0  # CosemParser(ValueParser(Decimal)): one group, value*unit
    INTEGER = 1  # CosemParser(ValueParser(int))
    TEXT = 2  # CosemParser(ValueParser(str)): kept as written
    TIME = 3  # CosemParser(ValueParser(timestamp))
    MBUS = 4  # MBusParser(timestamp, Decimal): (time)(value*unit)
    MBUS_V2 = 5  # MBusParser with the DSMR 2.2 gas layout (time)(..)(..)(..)(code)(unit)(value)
    COSEM_MULTI = 6  # CosemParser with several value groups
    PROFILE = 7  # ProfileGenericParser: 1-0:99.97.0 power failure log
    MAX_DEMAND = 8  # MaxDemandParser: 0-0:98.1.0 Belgian monthly peaks
    UNKNOWN = 9  # no object of the spec matches the code


class Coerce(enum.IntEnum):
    """What a dsmr_parser ValueParser coerces a value group to."""

    DECIMAL = 0
    INTEGER = 1
    TEXT = 2
    TIME = 3


@dataclass(frozen=True, slots=True)
class Plan:
    """How to decode the lines of one OBIS code under one spec."""

    kind: Kind
    name: str | None
    """dsmr_parser's value name, None for a code the spec does not know."""
    coerce: tuple[Coerce, ...] = ()
    """The value groups' coercions (several value groups, or a buffer entry)."""
    hex_text: bool = False
    """Whether a hex value may be shown decoded as 'text' (identifiers and text messages)."""
    buffer_types: tuple[tuple[str, tuple[Coerce, ...]], ...] = ()
    """For power-failure logs: the entry coercions per buffer value OBIS code."""


#: Name parts that mark an identifier or a text, whose hex form may be decoded as 'text'.
_TEXTUAL_NAME_PARTS = ("IDENTIFIER", "TEXT_MESSAGE", "SERIAL", "DEVICE_NAME")


@dataclass(frozen=True, slots=True)
class _SpecObject:
    """One object of a spec, as needed for matching codes."""

    index: int
    code_pattern: re.Pattern[str]
    pins_channel: bool
    row: SpecRow


_CHANNEL_FIELD = re.compile(r"^\^?[^-]*-(.*?):")


@cache
def _spec_objects(spec: str) -> tuple[_SpecObject, ...]:
    """The objects of a spec with their code patterns, in the spec's order."""
    check_spec_name(spec)
    objects = []
    for index, row in enumerate(SPECS[spec]):
        code_regex = row[0]
        channel = _CHANNEL_FIELD.match(code_regex)
        pins = channel is not None and channel.group(1) != r"\d"
        objects.append(_SpecObject(index, re.compile(code_regex), pins, row))
    return tuple(objects)


def _matches(obj: _SpecObject, code: str) -> bool:
    """Whether a spec object's code pattern matches the code the meter wrote."""
    found = obj.code_pattern.match(code)
    if found is None:
        return False
    end = found.end()
    return end == len(code) or not code[end].isdigit()


def matching_names(spec: str, code: str) -> tuple[str, ...]:
    """Every dsmr_parser value name of the spec whose pattern matches `code`, in spec order."""
    return tuple(obj.row[1] for obj in _spec_objects(spec) if _matches(obj, code))


def plan_for(spec: str, code: str) -> Plan:
    """The decoding plan of one OBIS code (as written, channel included) under one spec."""
    candidates = [obj for obj in _spec_objects(spec) if _matches(obj, code)]
    if not candidates:
        return Plan(Kind.UNKNOWN, None)
    chosen = min(candidates, key=lambda obj: (not obj.pins_channel, obj.index))
    return _plan_of(chosen.row)


def _plan_of(row: SpecRow) -> Plan:
    """Read one spec row (a dsmr_parser value parser, described) into a plan."""
    _, name, family, coerce_names, buffer_names = row
    hex_text = any(part in name for part in _TEXTUAL_NAME_PARTS)
    coerce = tuple(Coerce[c] for c in coerce_names)
    if family == "max_demand":
        return Plan(Kind.MAX_DEMAND, name, (Coerce.TIME, Coerce.TIME, Coerce.DECIMAL))
    if family == "profile":
        types = tuple((code, tuple(Coerce[c] for c in entry)) for code, entry in buffer_names)
        return Plan(Kind.PROFILE, name, coerce, buffer_types=types)
    if family == "mbus":
        if coerce == (Coerce.TIME, Coerce.DECIMAL):
            return Plan(Kind.MBUS, name, coerce)
        return Plan(Kind.MBUS_V2, name, coerce)
    if len(coerce) == 1:
        kind = (Kind.DECIMAL, Kind.INTEGER, Kind.TEXT, Kind.TIME)[coerce[0]]
        return Plan(kind, name, coerce, hex_text=hex_text and kind is Kind.TEXT)
    return Plan(Kind.COSEM_MULTI, name, coerce)
