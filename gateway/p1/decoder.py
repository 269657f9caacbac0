"""The P1 decoder: one whole telegram's bytes in, its objects mapping (or a Telegram) out.

`decode(raw, spec="auto")` checks the CRC (when the telegram carries one), picks the spec
(detected from the header and version lines, or the one given), and decodes every line into
`{"name", "value", "unit"}` (plus "time", "text" or "raw" where they apply; docs/p1.md is the
reference). It raises ChecksumError on a CRC mismatch and DecodeError on bytes it cannot read as
a telegram; nothing else escapes, whatever the bytes.

Speed: a cached plan per (spec, OBIS code) says how a line decodes; the common line forms
(one number, one integer, one text, one timestamp, an M-Bus reading) are decoded inline in the
loop, everything else, and anything irregular, by `_decode_line`, which is the general
definition (the inline paths must agree with it; tests check that they do).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from gateway.errors import ChecksumError, DecodeError, GatewayError
from gateway.p1.crc import crc16
from gateway.p1.specs import AUTO, Coerce, Kind, Plan, check_spec_name, detect_spec, plan_for
from gateway.p1.telegram import LineRecord, Telegram
from gateway.p1.timestamps import DEFAULT_ZONE, convert, zone_info

#: One decoded object: {"name": str|None, "value": ..., "unit": str|None, ...}.
DecodedObject = dict[str, Any]

#: The OBIS code of the meter's own timestamp.
METER_TIME_CODE = "0-0:1.0.0"

#: A plan table holds at most this many codes; beyond it (noise) plans are not cached.
MAX_CACHED_CODES = 2048

#: The memo of decoded lines (per spec and zone) holds two generations of at most this many
#: lines each: when the young one is full it becomes the old one, and a line found in the old
#: one moves back to the young one, so the lines that keep repeating stay. 512 keeps the hit
#: rate of a 32-port rig (replayed: 1.8 % misses at 128, 512 or 4096) and bounds the memo to
#: about 4.6 MB over 8 specs (4096 let a flood grow it to ~36 MB).
MAX_MEMO_LINES = 512

_CRC_DIGITS = re.compile(rb"[0-9A-Fa-f]{0,4}")
_GROUPS = re.compile(r"(?:\([^()]*\))+")

_DECIMAL = int(Kind.DECIMAL)
_INTEGER = int(Kind.INTEGER)
_TEXT = int(Kind.TEXT)
_TIME = int(Kind.TIME)
_MBUS = int(Kind.MBUS)


def decode(raw: bytes, spec: str = AUTO, *, zone: str | None = None) -> dict[str, DecodedObject]:
    """Decode one whole telegram into the contract's objects mapping, keyed by OBIS code.

    `spec` is "auto" or a dsmr_parser spec name; `zone` (default Europe/Brussels) reads
    timestamps without an S/W flag. Raises ChecksumError or DecodeError, nothing else.
    """
    return _decode(raw, spec, zone)[4]


def decode_telegram(
    raw: bytes, spec: str = AUTO, *, zone: str | None = None, crc_verified: bool = False
) -> Telegram:
    """Decode one whole telegram into a Telegram: bytes, spec used, header, meter time, objects.

    The same rules and errors as `decode`. `crc_verified=True` says the caller's Framer has
    already checked this frame's CRC (its `crc_ok` is not False), so it is not computed again.
    """
    return Telegram(*_decode(raw, spec, zone, crc_verified))


#: The pieces of a Telegram, in its fields' order.
_Pieces = tuple[
    bytes, str, str, str | None, dict[str, DecodedObject], tuple[LineRecord | None, ...] | None
]


def _decode(raw: bytes, spec: str, zone: str | None, crc_verified: bool = False) -> _Pieces:
    """The pieces of a Telegram; every unexpected failure becomes a DecodeError."""
    try:
        return _decode_checked(raw, spec, zone, crc_verified)
    except GatewayError:
        raise
    except Exception as exc:  # a bug: still honour the contract, but say what happened
        raise DecodeError(f"internal error while decoding: {exc!r}") from exc


def _decode_checked(raw: bytes, spec: str, zone: str | None, crc_verified: bool = False) -> _Pieces:
    """Locate the frame, check its CRC, pick the spec and decode the lines."""
    if not isinstance(raw, bytes):
        if not isinstance(raw, bytearray | memoryview):
            raise DecodeError(f"a telegram is bytes, not {type(raw).__name__}")
        raw = bytes(raw)
    first = raw.find(b"/")
    if first < 0:
        raise DecodeError("no telegram: no '/' starts a header")
    bang = raw.find(b"!", first)
    if bang < 0:
        raise DecodeError("incomplete telegram: no '!' ends it")
    start = raw.rfind(b"/", first, bang)  # the framer restarts on every '/'
    digits = _CRC_DIGITS.match(raw, bang + 1)
    given = digits.group() if digits else b""
    if given and not crc_verified:
        computed = crc16(raw[start : bang + 1])
        if computed != int(given, 16):
            expected = given.decode("ascii")
            raise ChecksumError(
                f"CRC mismatch: the telegram says {expected}, its bytes give {computed:04X}",
                expected=expected,
                computed=computed,
            )
    end = bang + 1 + len(given)
    tail = raw[end : end + 2]
    if tail == b"\r\n":
        end += 2
    elif tail[:1] in (b"\r", b"\n"):
        end += 1
    frame = raw if start == 0 and end == len(raw) else raw[start:end]

    if spec == AUTO:
        spec = detect_spec(frame)
    check_spec_name(spec)  # DecodeError for an unknown spec name
    zone = zone or DEFAULT_ZONE
    zone_info(zone)  # DecodeError for an unknown zone, before any timestamp needs it

    text = raw[start:bang].decode("latin-1")
    newline = text.find("\n")
    if newline < 0:
        header, body = text[1:], ""
    else:
        header, body = text[1:newline].rstrip("\r"), text[newline + 1 :]
    objects, lines = _decode_body(body, spec, zone)
    meter_time = _meter_time(objects, zone)
    return frame, spec, header, meter_time, objects, lines


def _meter_time(objects: dict[str, DecodedObject], zone: str) -> str | None:
    """The meter's own timestamp (0-0:1.0.0) as RFC 3339, whatever the spec calls it."""
    obj = objects.get(METER_TIME_CODE)
    if obj is None:
        return None
    value = obj["value"]
    if obj["name"] is not None:
        return value if isinstance(value, str) else None
    return convert(value, zone)[0] if isinstance(value, str) else None


#: A plan table entry: (kind, name, hex_text, plan), the first three unpacked for speed.
_Entry = tuple[int, str | None, bool, Plan]

#: A memo entry: (code, decoded object, whether its value is a list to copy deeply). It is
#: also the line's `LineRecord` in `Telegram.lines`: the object in it is never changed.
_Memo = tuple[str, DecodedObject, bool]

_ENTRY_TABLES: dict[str, dict[str, _Entry]] = {}
_MEMOS: dict[tuple[str, str], list[dict[str, _Memo]]] = {}  # [young, old]


def memo_sizes() -> list[int]:
    """How many lines each memo generation holds (young and old, per spec and zone)."""
    return [len(generation) for generations in _MEMOS.values() for generation in generations]


def clear_caches() -> None:
    """Forget every decoded line and cached timestamp / hex text (plans stay: they are code)."""
    _MEMOS.clear()
    convert.cache_clear()
    hex_text.cache_clear()


def _entry(spec: str, table: dict[str, _Entry], code: str) -> _Entry:
    """The plan entry of a code, made on first use and cached (while the table is not full)."""
    entry = table.get(code)
    if entry is None:
        plan = plan_for(spec, code)
        entry = (int(plan.kind), plan.name, plan.hex_text, plan)
        if len(table) < MAX_CACHED_CODES:
            table[code] = entry
    return entry


def _decode_body(
    body: str, spec: str, zone: str
) -> tuple[dict[str, DecodedObject], tuple[_Memo | None, ...] | None]:
    """Decode every line of the body (the lines between the header and '!'): the objects,
    and per object the memo entry of its line (see `Telegram.lines`).

    A line already seen (same spec and zone) is copied from the memo: meters repeat most
    lines telegram after telegram. Others take the inline path of their kind, or the general
    `_decode_line`; a piece that is not one regular `code(...)` line goes to `_decode_text`.
    """
    if body.startswith("\r\n"):
        body = body[2:]  # the blank line after the header
    if "\n(" in body:  # DSMR 2.2 / 3 gas: the value alone on the next line joins its code
        body = body.replace("\r\n(", "(").replace("\n(", "(")
    pieces = body.split(")\r\n")  # regular lines, each without its final ')'
    tail = pieces.pop()  # what follows the last regular line: normally ''
    table = _ENTRY_TABLES.get(spec)
    if table is None:
        table = _ENTRY_TABLES.setdefault(spec, {})
    generations = _MEMOS.get((spec, zone))
    if generations is None:
        generations = _MEMOS.setdefault((spec, zone), [{}, {}])
    memo, old = generations
    if len(memo) >= MAX_MEMO_LINES:
        memo, old = generations[:] = [{}, memo]
    memo_get = memo.get
    table_get = table.get
    objects: dict[str, DecodedObject] = {}
    lines: list[_Memo | None] = []
    add_line = lines.append
    expected = len(pieces)
    for piece in pieces:
        hit = memo_get(piece)
        if hit is None and old:
            hit = old.get(piece)
            if hit is not None:
                memo[piece] = hit
        if hit is not None:
            code, template, nested = hit
            objects[code] = _deep_copy(template) if nested else template.copy()
            add_line(hit)
            continue
        code, sep, rest = piece.partition("(")
        entry = table_get(code)
        if entry is None:
            entry = _entry(spec, table, code)
        kind, name, hexy, plan = entry
        obj: DecodedObject | None = None
        if kind == _DECIMAL:
            value, _, unit = rest.partition("*")
            try:
                number = Decimal(value)
            except ArithmeticError:
                pass
            else:
                if number.is_finite() and (unit.isalnum() or not unit):
                    obj = {"name": name, "value": number, "unit": unit or None}
        elif kind == _TEXT:
            if ")" not in rest and "(" not in rest:
                value, _, unit = rest.partition("*")
                obj = {"name": name, "value": value or None, "unit": unit or None}
                if hexy and value:
                    decoded = hex_text(value)
                    if decoded is not None:
                        obj["text"] = decoded
        elif kind == _INTEGER:
            value, _, unit = rest.partition("*")
            digits = value.isascii() and value.isdigit() and len(value) < 64
            if digits and (unit.isalnum() or not unit):
                obj = {"name": name, "value": int(value), "unit": unit or None}
        elif kind == _MBUS:
            stamp, _, reading = rest.partition(")(")
            value, _, unit = reading.partition("*")
            iso, readable = convert(stamp, zone)
            if readable and (unit.isalnum() or not unit):
                try:
                    number = Decimal(value)
                except ArithmeticError:
                    pass
                else:
                    if number.is_finite():
                        obj = {"name": name, "value": number, "unit": unit or None, "time": iso}
        elif kind == _TIME:
            iso, readable = convert(rest, zone)
            if readable:
                obj = {"name": name, "value": iso, "unit": None}
        if obj is not None:
            objects[code] = obj
            memo[piece] = record = (code, obj.copy(), False)
            add_line(record)
            continue
        if not sep or "\n" in piece:  # not one regular line: blank lines, LF-only ends...
            count = _decode_text(piece + ")", spec, table, zone, objects)
            expected += count - 1
            lines.extend([None] * count)
            continue
        obj = _decode_line(plan, piece + ")", zone)
        nested = isinstance(obj["value"], list)
        objects[code] = obj
        memo[piece] = record = (code, _deep_copy(obj) if nested else obj.copy(), nested)
        add_line(record)
    if tail.strip():
        count = _decode_text(tail, spec, table, zone, objects)
        expected += count
        lines.extend([None] * count)
    if len(objects) != expected:  # a code repeated: decode again, keeping every line
        objects = {}
        _decode_text(body, spec, table, zone, objects, keep_repeats=True)
        return objects, None
    return objects, tuple(lines)


def _deep_copy(obj: DecodedObject) -> DecodedObject:
    """A copy of a decoded object whose value is a list (of values or of entry dicts)."""
    copy = obj.copy()
    copy["value"] = [item.copy() if isinstance(item, dict) else item for item in obj["value"]]
    return copy


def _decode_text(
    text: str,
    spec: str,
    table: dict[str, _Entry],
    zone: str,
    objects: dict[str, DecodedObject],
    *,
    keep_repeats: bool = False,
) -> int:
    """Decode each non-blank line of `text` the general way into `objects`; return how many.

    With `keep_repeats`, a code already present is kept as 'CODE#2', 'CODE#3'...
    """
    count = 0
    for line in text.split("\n"):
        line = line.rstrip("\r")
        code, sep, _ = line.partition("(")
        if not sep:
            code = line.strip()
            if not code:
                continue
        key = code
        if keep_repeats:
            repeat = 1
            while key in objects:
                repeat += 1
                key = f"{code}#{repeat}"
        objects[key] = _decode_line(_entry(spec, table, code)[3], line, zone)
        count += 1
    return count


@lru_cache(maxsize=1024)
def hex_text(value: str) -> str | None:
    """The printable ASCII text that a hex string encodes, or None when it encodes none."""
    if len(value) % 2 or not value.isalnum():
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError:
        return None
    text = data.decode("latin-1")
    return text if data.isascii() and text.isprintable() else None


# --- The general line decoder ---------------------------------------------------------------


class _Unreadable(Exception):
    """A value group that does not read as its plan says (internal to this module)."""


def _decode_line(plan: Plan, line: str, zone: str) -> DecodedObject:
    """Decode one line by its plan; the definition the inline fast paths must agree with.

    A line that does not have the form its plan expects keeps its name, with value None and
    the line itself as "raw"; a code the spec does not know keeps its groups' text as value.
    """
    name = plan.name
    rest = line.partition("(")[2]
    groups_text = "(" + rest.rstrip() if rest else ""
    if not groups_text or not _GROUPS.fullmatch(groups_text):
        return {"name": name, "value": None, "unit": None, "raw": line}
    groups = groups_text[1:-1].split(")(")
    kind = plan.kind
    try:
        if kind is Kind.UNKNOWN:
            value: Any = groups[0] if len(groups) == 1 else groups
            return {"name": None, "value": value, "unit": None, "raw": line}
        if kind in (Kind.DECIMAL, Kind.INTEGER, Kind.TEXT, Kind.TIME):
            if len(groups) != 1:
                raise _Unreadable
            value, unit = _coerce(plan.coerce[0], groups[0], zone)
            obj: DecodedObject = {"name": name, "value": value, "unit": unit}
            if plan.hex_text and value:
                decoded = hex_text(value)
                if decoded is not None:
                    obj["text"] = decoded
            return obj
        if kind is Kind.MBUS or kind is Kind.MBUS_V2:
            return _mbus(plan, groups, zone)
        if kind is Kind.COSEM_MULTI:
            return _cosem_multi(plan, groups, zone)
        if kind is Kind.PROFILE:
            return _profile(plan, groups, line, zone)
        return _max_demand(plan, groups, line, zone)
    except _Unreadable:
        return {"name": name, "value": None, "unit": None, "raw": line}


def _coerce(coerce: Coerce, group: str, zone: str) -> tuple[Any, str | None]:
    """One value group `value*unit` coerced as dsmr_parser's ValueParser says: (value, unit)."""
    if coerce is Coerce.TIME:
        if not group:
            return None, None
        iso, readable = convert(group, zone)
        if not readable:
            raise _Unreadable
        return iso, None
    value, _, unit = group.partition("*")
    if not value:
        return None, unit or None
    if coerce is Coerce.DECIMAL:
        try:
            number = Decimal(value)
        except ArithmeticError:
            raise _Unreadable from None
        if not number.is_finite():
            raise _Unreadable
        return number, unit or None
    if coerce is Coerce.INTEGER:
        if not (value.isascii() and value.isdigit() and len(value) < 64):
            raise _Unreadable
        return int(value), unit or None
    return value, unit or None


def _mbus(plan: Plan, groups: list[str], zone: str) -> DecodedObject:
    """An M-Bus reading with its own timestamp: `(time)(value*unit)`, or DSMR 2.2's
    `(time)(..)(..)(..)(code)(unit)(value)` (dsmr_parser's MBusObject reads the same places)."""
    coerce = plan.coerce
    if len(groups) != len(coerce) or len(coerce) not in (2, 7):
        raise _Unreadable
    time, _ = _coerce(coerce[0], groups[0], zone)
    if len(coerce) == 2:
        value, unit = _coerce(coerce[1], groups[1], zone)
    else:
        value, _ = _coerce(coerce[6], groups[6], zone)
        unit = groups[5] or None
    return {"name": plan.name, "value": value, "unit": unit, "time": time}


def _cosem_multi(plan: Plan, groups: list[str], zone: str) -> DecodedObject:
    """A Cosem line of several value groups: a list of values; the unit they share, if any."""
    if len(groups) != len(plan.coerce):
        raise _Unreadable
    pairs = [_coerce(c, g, zone) for c, g in zip(plan.coerce, groups, strict=True)]
    units = {unit for _, unit in pairs if unit is not None}
    unit = units.pop() if len(units) == 1 else None
    return {"name": plan.name, "value": [value for value, _ in pairs], "unit": unit}


def _count(group: str) -> int | None:
    """A buffer's entry count, None when the group is empty or not a number."""
    return int(group) if group.isascii() and group.isdigit() and len(group) < 8 else None


def _profile(plan: Plan, groups: list[str], line: str, zone: str) -> DecodedObject:
    """The power-failure log `(n)(type)(time)(value*unit)...` as a list of entries.

    `()` and `(0)` are empty logs. When the count disagrees with the entries present, or an
    entry does not read, the entries that read are kept and the line is added as "raw".
    """
    count = _count(groups[0])
    obj: DecodedObject = {"name": plan.name, "value": [], "unit": None}
    if count is None and groups[0]:
        obj["raw"] = line
        return obj
    if len(groups) < 2:
        if count:
            obj["raw"] = line
        return obj
    coerce = dict(plan.buffer_types).get(groups[1], plan.coerce)
    entries = groups[2:]
    intact = len(entries) % 2 == 0 and len(entries) // 2 == (count or 0)
    for stamp, reading in zip(entries[0::2], entries[1::2], strict=False):
        try:
            first, _ = _coerce(coerce[0], stamp, zone)
            second, unit = _coerce(coerce[1], reading, zone)
        except _Unreadable:
            intact = False
            continue
        if coerce[0] is Coerce.TIME:
            obj["value"].append({"time": first, "value": second, "unit": unit})
        else:
            obj["value"].append({"value": [first, second], "unit": unit})
    if not intact:
        obj["raw"] = line
    return obj


def _max_demand(plan: Plan, groups: list[str], line: str, zone: str) -> DecodedObject:
    """The Belgian monthly peaks `(n)(id)(id)(month)(time)(value*unit)...` as a list.

    Each entry is {"month": start of the month, "time": when the peak occurred, "value",
    "unit"}; placeholder times are None. Count mismatches keep what reads, plus "raw".
    (MaxDemandParser reads timestamp, timestamp, Decimal: the plan's coercions say the same.)
    """
    count = _count(groups[0])
    entries_out: list[DecodedObject] = []
    obj: DecodedObject = {"name": plan.name, "value": entries_out, "unit": None}
    if count is None:
        if groups[0] or len(groups) > 1:
            obj["raw"] = line
        return obj
    entries = groups[3:]
    intact = (len(groups) >= 3 or count == 0) and len(entries) == 3 * count
    for index in range(0, len(entries) - 2, 3):
        month, month_ok = convert(entries[index], zone)
        time, time_ok = convert(entries[index + 1], zone)
        value, _, unit = entries[index + 2].partition("*")
        try:
            number: Decimal | None = Decimal(value) if value else None
        except ArithmeticError:
            number = None
        readable = number.is_finite() if number is not None else not value
        if month_ok and time_ok and readable:
            entry = {"month": month, "time": time, "value": number, "unit": unit or None}
            entries_out.append(entry)
        else:
            intact = False
    if not intact:
        obj["raw"] = line
    return obj
