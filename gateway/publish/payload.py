"""Payloads: an exact JSON encoder (Decimal as the meter's digits, never a float) and builders.

`Decimal(json_text) == Decimal(meter_text)` for every number: a Decimal is written as
`str(Decimal)`, which is valid JSON for every finite value ("123.456", "-0.5", "1E+3").
Floats are refused: they would round. Builders are split in two so that the costly part
(the telegram's objects) is encoded once, when received, and the cheap envelope (seq,
received_at) is added when the route is known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.errors import PublishError
from gateway.p1.telegram import Telegram
from gateway.timefmt import rfc3339_utc

_encode_str = json.encoder.encode_basestring


class PayloadError(PublishError, ValueError):
    """A value the exact encoder refuses (float, NaN, non-str key, unknown type...)."""


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


def telegram_body(telegram: Telegram) -> bytes:
    """The routed-independent tail of a telegram payload: meter_time, spec, header, objects."""
    parts = [
        '"meter_time":',
        encode_json(telegram.meter_time),
        ',"spec":',
        _encode_str(telegram.spec),
        ',"header":',
        _encode_str(telegram.header),
        ',"objects":',
        encode_json(telegram.objects),
    ]
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"text not encodable as UTF-8: {exc}") from exc


def invalid_body(raw: bytes, reason: str) -> bytes:
    """The tail of an invalid-frame payload: reason, and raw as a latin-1 string (exact)."""
    text = f'"reason":{_encode_str(reason)},"raw_encoding":"latin-1","raw":' + _encode_str(
        raw.decode("latin-1")
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"reason not encodable as UTF-8: {exc}") from exc


def envelope(rig: str, variant: str, seq: int, received_wall_ns: int, body: bytes) -> bytes:
    """A whole payload: {"rig","variant","seq","received_at", <body>}."""
    head = (
        f'{{"rig":{_encode_str(rig)},"variant":{_encode_str(variant)},"seq":{int(seq)},'
        f'"received_at":"{rfc3339_utc(received_wall_ns)}",'
    )
    return head.encode("utf-8") + body + b"}"


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


def health_payload(rig: str, variant: str, health: Mapping[str, Any]) -> bytes:
    """A port's retained health: {"rig", "variant", ...health}; refuses holder/slot keys.

    Health holds the gateway's own measurements (floats such as jitter), not meter values:
    those are written with their shortest repr, non-finite ones as null.
    """
    leaked = _HOLDER_KEYS.intersection(health)
    if leaked:
        raise PayloadError(f"port health must not name holders: {sorted(leaked)}")
    return encode_json_bytes({"rig": rig, "variant": variant, **_measured(health)})
