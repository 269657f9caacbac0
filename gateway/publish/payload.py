"""Payloads: an exact JSON encoder (Decimal as the meter's digits, never a float) and builders.

`Decimal(json_text) == Decimal(meter_text)` for every number: a Decimal is written as
`str(Decimal)`, which is valid JSON for every finite value ("123.456", "-0.5", "1E+3").
Floats are refused: they would round. Builders are split in two so that the costly part
(the telegram's objects) is encoded once, when received, and the cheap envelope (seq,
received_at) is added when the route is known.

Speed: a meter repeats most lines telegram after telegram, and the decoder hands out the same
record for the same line (`Telegram.lines`). `telegram_body` memoises each line's JSON by that
record's identity, so a repeated line costs a dictionary look-up; a new line is encoded by
`_object_json` (the common flat shapes) or by `_encode`, the general definition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.errors import PayloadError as PayloadError  # raised here; re-exported for callers
from gateway.p1.telegram import LineRecord, Telegram
from gateway.timefmt import rfc3339_utc

_encode_str = json.encoder.encode_basestring

#: The memo of line JSON holds two generations of at most this many lines each (as the
#: decoder's line memo does): a line found in the old one moves back to the young one.
MAX_MEMO_LINES = 2048

#: id(record) -> (record, '"code":{...}'). The entry holds its record, so the id cannot be
#: reused by another object while the entry exists: the same id is the same line.
_LineMemo = dict[int, tuple[LineRecord, str]]
_LINE_MEMOS: list[_LineMemo] = [{}, {}]  # [young, old]


def clear_line_memo() -> None:
    """Forget every memoised line JSON."""
    _LINE_MEMOS[:] = [{}, {}]


def _encode(value: Any, out: list[str]) -> None:
    """Append the JSON text of `value` to `out`."""
    if isinstance(value, str):
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise PayloadError(f"non-finite number {value!r}")
        out.append(str(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"object key {key!r} is not a string")
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, datetime):
        if value.utcoffset() is None:
            raise PayloadError(f"naive datetime {value.isoformat()}")
        out.append(_encode_str(value.isoformat()))
    elif isinstance(value, float):
        raise PayloadError(f"float {value!r} refused: numbers must be Decimal (exact)")
    else:
        raise PayloadError(f"cannot encode {type(value).__name__} as JSON")


def encode_json(value: Any) -> str:
    """The compact JSON text of `value`, exact for Decimal; raises PayloadError."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def encode_json_bytes(value: Any) -> bytes:
    """`encode_json` as UTF-8 bytes; raises PayloadError for text UTF-8 cannot carry."""
    try:
        return encode_json(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"text not encodable as UTF-8: {exc}") from exc


def _object_json(obj: Any) -> str:
    """The JSON text of one telegram object: flat dicts of str, None, int and finite Decimal
    values inline; anything else by the general `encode_json` (the same text, or its error)."""
    if type(obj) is not dict:
        return encode_json(obj)
    parts = []
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            text = _encode_str(value)
        elif value is None:
            text = "null"
        elif kind is int or (kind is Decimal and value.is_finite()):
            text = str(value)
        else:
            return encode_json(obj)
        if type(key) is not str:
            return encode_json(obj)  # raises PayloadError
        parts.append(f"{_encode_str(key)}:{text}")
    return "{" + ",".join(parts) + "}"


def _objects_json(telegram: Telegram) -> str:
    """The JSON text of a telegram's objects mapping, each line's text memoised by its record."""
    objects = telegram.objects
    records = telegram.lines
    if records is None or len(records) != len(objects):
        return encode_json(objects)
    memos = _LINE_MEMOS
    young, old = memos
    if len(young) >= MAX_MEMO_LINES:
        young, old = memos[:] = [{}, young]
    young_get = young.get
    parts = []
    for code, record in zip(objects, records, strict=True):
        if record is not None and record[0] is code:  # the record of this very object
            key = id(record)
            entry = young_get(key)
            if entry is None:
                entry = old.get(key)
                if entry is None:
                    entry = (record, f"{_encode_str(code)}:{_object_json(record[1])}")
                young[key] = entry
            if entry[0] is record:  # always, while the entry holds it (see _LineMemo)
                parts.append(entry[1])
                continue
        if not isinstance(code, str):
            raise PayloadError(f"object key {code!r} is not a string")
        parts.append(f"{_encode_str(code)}:{_object_json(objects[code])}")
    return "{" + ",".join(parts) + "}"


def telegram_body(telegram: Telegram) -> bytes:
    """The routed-independent tail of a telegram payload: meter_time, spec, header, objects.

    The same bytes as `reference_telegram_body`, faster: see the module's note on speed.
    """
    return _telegram_body(telegram, _objects_json(telegram))


def reference_telegram_body(telegram: Telegram) -> bytes:
    """`telegram_body` by the general encoder alone: the definition (tests compare the two)."""
    return _telegram_body(telegram, encode_json(telegram.objects))


def _telegram_body(telegram: Telegram, objects_json: str) -> bytes:
    """The body around the objects' JSON text."""
    meter_time = telegram.meter_time
    parts = [
        '"meter_time":',
        _encode_str(meter_time) if type(meter_time) is str else encode_json(meter_time),
        ',"spec":',
        _encode_str(telegram.spec),
        ',"header":',
        _encode_str(telegram.header),
        ',"objects":',
        objects_json,
    ]
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"text not encodable as UTF-8: {exc}") from exc


#: Why a frame is invalid: the `reason_code` of an invalid payload.
REASON_CODES = frozenset({"crc_mismatch", "truncated", "oversize", "undecodable"})


def invalid_body(
    raw: bytes, reason: str, reason_code: str = "crc_mismatch", length: int | None = None
) -> bytes:
    """The tail of an invalid-frame payload: reason_code, reason, the frame's whole length
    (`len(raw)` unless said: an oversize frame's raw holds only its first bytes), and raw as a
    latin-1 string (exact). Raises PayloadError for a reason code not in REASON_CODES."""
    if reason_code not in REASON_CODES:
        raise PayloadError(f"unknown reason code {reason_code!r}")
    size = len(raw) if length is None else int(length)
    text = (
        f'"reason_code":"{reason_code}","reason":{_encode_str(reason)},"length":{size},'
        '"raw_encoding":"latin-1","raw":' + _encode_str(raw.decode("latin-1"))
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"reason not encodable as UTF-8: {exc}") from exc


def envelope(
    rig: str,
    variant: str,
    seq: int,
    received_wall_ns: int,
    body: bytes,
    prev_seq: int | None = None,
) -> bytes:
    """A whole payload: {"rig","variant","seq","received_at", <body>, "prev_seq"} (prev_seq
    last, so the fields before it keep their places)."""
    head = (
        f'{{"rig":{_encode_str(rig)},"variant":{_encode_str(variant)},"seq":{int(seq)},'
        f'"received_at":"{rfc3339_utc(received_wall_ns)}",'
    )
    tail = b',"prev_seq":null}' if prev_seq is None else b',"prev_seq":%d}' % int(prev_seq)
    return head.encode("utf-8") + body + tail


def span_time(wall_ns: int) -> str:
    """A slot bound as RFC 3339 UTC: to the second when it is a whole second, else to the us."""
    if wall_ns % 1_000_000_000:
        return rfc3339_utc(wall_ns)
    return rfc3339_utc(wall_ns)[:-8] + "Z"


def _spans(spans: Sequence[tuple[int, int]]) -> list[dict[str, str]]:
    """[{"start", "end"}, ...] of (start_ns, end_ns) spans."""
    return [{"start": span_time(a), "end": span_time(b)} for a, b in spans]


def session_payload(event: str, start_ns: int, end_ns: int, at_ns: int) -> bytes:
    """A session marker: {"event": "start"|"end", "slot": {"start", "end"}, "at"}."""
    slot = {"start": span_time(start_ns), "end": span_time(end_ns)}
    return encode_json_bytes({"event": event, "slot": slot, "at": rfc3339_utc(at_ns)})


def schedule_payload(
    rig: str, holder: str, slots: Sequence[tuple[int, int]], updated_ns: int
) -> bytes:
    """A holder's retained schedule: {"rig", "holder", "slots": [{"start", "end"}], "updated_at"}
    with that holder's own current and coming slots only."""
    return encode_json_bytes(
        {
            "rig": rig,
            "holder": holder,
            "slots": _spans(slots),
            "updated_at": rfc3339_utc(updated_ns),
        }
    )


def calendar_payload(rig: str, busy: Sequence[tuple[int, int]]) -> bytes:
    """The rig's retained free/busy: {"rig", "busy": [{"start", "end"}]}, no names."""
    return encode_json_bytes({"rig": rig, "busy": _spans(busy)})


def applied_payload(version: int | None, refused: str | None = None) -> bytes:
    """The rig's answer to the lab's schedule: {"version"}, or {"version", "refused"} with the
    reason (text UTF-8 cannot carry is escaped)."""
    if refused is None:
        return encode_json_bytes({"version": version})
    reason = refused.encode("utf-8", "backslashreplace").decode("utf-8")
    return encode_json_bytes({"version": version, "refused": reason})


def status_payload(rig: str, state: str, **extra: Any) -> bytes:
    """The retained status: {"rig", "state", ...extra}; never a holder name."""
    return encode_json_bytes({"rig": rig, "state": state, **extra})


_HOLDER_KEYS = frozenset({"holder", "holders", "slot", "slots"})


def catalogue_payload(rig: str, variants: Sequence[Mapping[str, Any]]) -> bytes:
    """The retained variant catalogue {"rig", "variants": [...]}; refuses holder/slot keys."""
    for entry in variants:
        leaked = _HOLDER_KEYS.intersection(entry)
        if leaked:
            raise PayloadError(f"the variant catalogue must not name holders: {sorted(leaked)}")
    return encode_json_bytes({"rig": rig, "variants": list(variants)})


def _measured(value: Any) -> Any:
    """The gateway's own measurements (jitter, ages) as exact JSON: floats via their repr."""
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if isinstance(value, Mapping):
        return {k: _measured(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_measured(v) for v in value]
    return value


#: Keys that would name the rig's host (device paths, URLs, error texts naming them).
_HOST_KEYS = frozenset({"port", "url", "path", "last_error"})


def health_payload(rig: str, variant: str, health: Mapping[str, Any]) -> bytes:
    """A port's retained health: {"rig", "variant", ...health}; refuses holder/slot keys and
    keys that name the rig's host (a device path, an error text): every tester reads it.

    Health holds the gateway's own measurements (floats such as jitter), not meter values:
    those are written with their shortest repr, non-finite ones as null.
    """
    leaked = _HOLDER_KEYS.intersection(health)
    if leaked:
        raise PayloadError(f"port health must not name holders: {sorted(leaked)}")
    host = _HOST_KEYS.intersection(health)
    if host:
        raise PayloadError(f"public port health must not name the rig's host: {sorted(host)}")
    return encode_json_bytes({"rig": rig, "variant": variant, **_measured(health)})
