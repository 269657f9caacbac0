"""Payloads: exact numbers, the contract's envelope, invalid frames, no holder names leaking."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.publish import PayloadError, encode_json, rfc3339_utc
from gateway.publish import payload as pl
from tests.publish.helpers import make_telegram


def load(text: str | bytes) -> object:
    """Parse JSON keeping every number exact."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimals_round_trip_exactly(value: Decimal) -> None:
    """Decimal(json_text) == the Decimal written, for every finite Decimal."""
    text = encode_json({"v": value})
    assert load(text) == {"v": value}


@pytest.mark.parametrize(
    "meter_text,json_text",
    [
        ("000004.426", "4.426"),
        ("00.000", "0.000"),
        ("0001", "1"),
        ("-000.5", "-0.5"),
        ("00230.0", "230.0"),
        ("00000.107", "0.107"),
    ],
)
def test_meter_text_loses_only_its_leading_zeros(meter_text: str, json_text: str) -> None:
    """The JSON number is the meter's decimal text without leading zeros."""
    assert encode_json(Decimal(meter_text)) == json_text
    assert Decimal(json_text) == Decimal(meter_text)


@pytest.mark.parametrize(
    "bad", [1.5, Decimal("NaN"), Decimal("Infinity"), {1: "x"}, object(), {"a": [float("inf")]}]
)
def test_values_that_would_not_be_exact_json_are_refused(bad: object) -> None:
    """Floats, non-finite numbers, non-str keys and unknown types raise PayloadError."""
    with pytest.raises(PayloadError):
        encode_json(bad)


def test_plain_values_encode_as_json() -> None:
    """str, None, bools, ints, lists, nested objects; text keeps its characters."""
    value = {
        "s": "FLU5\\253769484_A",
        "n": None,
        "t": True,
        "f": False,
        "i": 7,
        "l": [Decimal("1.10"), "x"],
        "o": {"é": "ü"},
    }
    text = encode_json(value)
    assert json.loads(text) == {**value, "l": [1.1, "x"]}
    assert '"1.10"' not in text and "1.10" in text


def test_rfc3339_utc_has_microseconds_and_z() -> None:
    """received_at: UTC, microseconds, 'Z'; nanoseconds truncated."""
    assert rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339_utc(1_795_885_392_123_456_789) == "2026-11-28T17:03:12.123456Z"


def test_telegram_payload_has_the_contract_fields_in_order() -> None:
    """{"rig","variant","seq","received_at","meter_time","spec","header","objects","prev_seq"}."""
    t = make_telegram(42)
    data = pl.envelope("rig-a", "v5", 41873, 1_795_885_392_123_456_789, pl.telegram_body(t))
    parsed = json.loads(data, parse_float=Decimal)
    assert list(parsed) == [
        "rig",
        "variant",
        "seq",
        "received_at",
        "meter_time",
        "spec",
        "header",
        "objects",
        "prev_seq",
    ]
    assert parsed["prev_seq"] is None
    chained = pl.envelope("rig-a", "v5", 41873, 0, pl.telegram_body(t), 41001)
    assert json.loads(chained)["prev_seq"] == 41001 and chained.endswith(b',"prev_seq":41001}')
    assert parsed["seq"] == 41873 and parsed["received_at"] == "2026-11-28T17:03:12.123456Z"
    assert parsed["header"] == "ISk5\\2MT382-1000"
    assert parsed["objects"]["1-0:1.8.1"]["value"] == Decimal("42.426")
    assert parsed["objects"]["9-9:9.9.9"] == {
        "name": None,
        "value": "unknown line kept",
        "unit": None,
    }
    assert b'"value":42.426' in data


def test_invalid_frame_payload_carries_the_exact_bytes_and_reason() -> None:
    """raw is the frame as a latin-1 string: every byte value comes back exactly."""
    raw = bytes(range(256)) + b"\r\n!ABCD\r\n"
    data = pl.envelope("rig-a", "v5", 3, 0, pl.invalid_body(raw, "CRC mismatch: ABCD != 1234"))
    parsed = json.loads(data)
    assert parsed["reason"] == "CRC mismatch: ABCD != 1234"
    assert parsed["raw_encoding"] == "latin-1"
    assert parsed["raw"].encode("latin-1") == raw
    assert list(parsed)[:4] == ["rig", "variant", "seq", "received_at"]
    assert (parsed["reason_code"], parsed["length"]) == ("crc_mismatch", len(raw))


@pytest.mark.parametrize("code", sorted(pl.REASON_CODES))
def test_invalid_payload_says_why_as_a_code_and_the_whole_length(code: str) -> None:
    """reason_code is one of four; length is the frame's whole length (an oversize frame's raw
    holds only its first bytes); an unknown code is refused."""
    raw = b"/" + b"x" * 99
    length = 20_000 if code == "oversize" else None
    body = pl.invalid_body(raw, f"{code}: why", code, length)
    parsed = json.loads(pl.envelope("rig-a", "v5", 3, 0, body))
    assert parsed["reason_code"] == code and parsed["reason"] == f"{code}: why"
    assert parsed["length"] == (length or len(raw)) and parsed["raw"].encode("latin-1") == raw
    tail = ["reason_code", "reason", "length", "raw_encoding", "raw", "prev_seq"]
    assert list(parsed)[4:] == tail
    with pytest.raises(PayloadError):
        pl.invalid_body(raw, "why", "short")


def test_catalogue_and_health_never_name_holders() -> None:
    """A catalogue entry or a health dict with a holder/slot key is refused; so is a health
    key that would name the rig's host."""
    assert json.loads(pl.catalogue_payload("rig-a", [{"id": "v5", "spec": "V5"}])) == {
        "rig": "rig-a",
        "variants": [{"id": "v5", "spec": "V5"}],
    }
    with pytest.raises(PayloadError):
        pl.catalogue_payload("rig-a", [{"id": "v5", "holder": "acme"}])
    with pytest.raises(PayloadError):
        pl.health_payload("rig-a", "v5", {"state": "up", "slot": "acme"})
    for host in ("port", "url", "path", "last_error"):  # nor the rig's host
        with pytest.raises(PayloadError):
            pl.health_payload("rig-a", "v5", {"state": "down", host: "/dev/ttyUSB0"})
    assert json.loads(pl.health_payload("rig-a", "v5", {"state": "up"})) == {
        "rig": "rig-a",
        "variant": "v5",
        "state": "up",
    }
