"""No input makes the framer or the decoder raise anything but a GatewayError.

Random bytes mostly stop at the frame or the CRC, so the decoder is also fed telegrams whose
lines are mutated or made up and whose CRC is then recomputed: those reach every line path.
Decoded objects must stay within the documented shapes (they become JSON).
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import corpus
from gateway.errors import GatewayError
from gateway.p1 import SPEC_NAMES, Frame, Framer, crc_hex, decode, decode_telegram
from gateway.p1.decoder import _decode_line
from gateway.p1.specs import plan_for
from tests.p1.telegrams import telegram

CORPUS_FRAMES = [
    e.raw for entry in corpus.entries() for e in Framer().feed(entry.read()) if isinstance(e, Frame)
]
CODES = sorted(
    {
        line.partition(b"(")[0].decode("latin-1")
        for frame in CORPUS_FRAMES
        for line in frame.split(b"\r\n")
        if b"(" in line and not line.startswith(b"(")
    }
)
GROUP_TEXT = st.text(alphabet="0123456789.*-:SWswABCDEFabcdef kWhm3()", max_size=16)
SPECS = st.sampled_from(("auto", *SPEC_NAMES))


def _decode_or_gateway_error(raw: bytes, spec: str = "auto") -> dict[str, Any] | None:
    """Decode; a GatewayError is fine (None), but never the decoder's internal-error net."""
    try:
        objects = decode(raw, spec)
    except GatewayError as exc:
        assert "internal error" not in str(exc), exc
        return None
    _check_shapes(objects)
    return objects


def _check_time(value: Any) -> None:
    """A time is None or an RFC 3339 string with an offset."""
    if value is not None:
        assert isinstance(value, str)
        assert datetime.fromisoformat(value).utcoffset() is not None


def _check_scalar(value: Any) -> None:
    """A value is None, str, int or a finite Decimal."""
    assert value is None or isinstance(value, str | int | Decimal)
    if isinstance(value, Decimal):
        assert value.is_finite()


def _check_shapes(objects: dict[str, Any]) -> None:
    """Every object has name, value, unit; values and times are of the documented types."""
    for code, obj in objects.items():
        assert isinstance(code, str)
        assert (
            {"name", "value", "unit"}
            <= obj.keys()
            <= {"name", "value", "unit", "time", "text", "raw"}
        )
        assert obj["name"] is None or isinstance(obj["name"], str)
        assert obj["unit"] is None or isinstance(obj["unit"], str)
        if "time" in obj:
            _check_time(obj["time"])
        value = obj["value"]
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    for key in ("month", "time"):
                        if key in item:
                            _check_time(item[key])
                    _check_scalar(
                        item.get("value") if not isinstance(item.get("value"), list) else None
                    )
                else:
                    _check_scalar(item)
        elif obj["name"] == "P1_MESSAGE_TIMESTAMP":
            _check_time(value)
        else:
            _check_scalar(value)
    json.dumps(objects, default=str)


@pytest.mark.parametrize("entry", corpus.entries(), ids=lambda e: e.name.removesuffix(".txt"))
def test_no_corpus_file_makes_framer_or_decoder_raise_otherwise(entry: corpus.CorpusEntry) -> None:
    """Each corpus file, whole and frame by frame, in every spec: only GatewayErrors."""
    raw = entry.read()
    events = Framer().feed(raw)
    Framer(strip_parity=True, max_frame_size=512).feed(raw)
    _decode_or_gateway_error(raw)
    for event in events:
        if isinstance(event, Frame):
            for spec in ("auto", *SPEC_NAMES):
                _decode_or_gateway_error(event.raw, spec)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400), spec=SPECS)
def test_random_bytes_raise_only_gateway_errors(raw: bytes, spec: str) -> None:
    """Arbitrary bytes: the framer never raises, the decoder raises only GatewayErrors."""
    Framer().feed(raw)
    Framer(strip_parity=True, max_frame_size=64).feed(raw)
    _decode_or_gateway_error(raw, spec)
    _decode_or_gateway_error(b"/" + raw + b"!", spec)


def _with_crc(body: bytes) -> bytes:
    """A frame body ('/' .. '!') completed with its CRC and CR LF."""
    return body + crc_hex(body).encode() + b"\r\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=st.sampled_from(CORPUS_FRAMES),
    edits=st.lists(
        st.tuples(
            st.floats(0, 1), st.integers(0, 3), st.text("()*.:-0123456789SW\r\n!/ ", max_size=3)
        ),
        max_size=8,
    ),
    spec=SPECS,
)
def test_mutated_telegrams_with_a_good_crc_raise_only_gateway_errors(
    frame: bytes, edits: list[tuple[float, int, str]], spec: str
) -> None:
    """Corpus telegrams with random edits, CRC recomputed: decoded or a GatewayError."""
    body = bytearray(frame[: frame.rindex(b"!") + 1])
    for where, cut, insert in edits:
        at = int(where * len(body))
        body[at : at + cut] = insert.encode("latin-1")
    _decode_or_gateway_error(_with_crc(bytes(body)), spec)


lines = st.lists(
    st.tuples(st.sampled_from(CODES), st.lists(GROUP_TEXT, min_size=0, max_size=5)),
    max_size=12,
    unique_by=lambda pair: pair[0],
)


@settings(max_examples=300, deadline=None)
@given(
    made_up=lines, spec=SPECS, header=st.sampled_from(["FLU5\\1", "ISK5\\2M550", "KFM5", "Lux5\\1"])
)
def test_made_up_lines_decode_by_their_definition(
    made_up: list[tuple[str, list[str]]], spec: str, header: str
) -> None:
    """Lines of known codes with arbitrary groups: every object is what `_decode_line` says."""
    texts = [code + "".join(f"({group})" for group in groups) for code, groups in made_up]
    texts = [t for t in texts if "\r" not in t and "\n" not in t]
    raw = telegram(*texts, header=header)
    objects = _decode_or_gateway_error(raw, spec)
    if objects is None:
        return
    used = decode_telegram(raw, spec).spec
    for text in texts:
        code = text.partition("(")[0] if "(" in text else text.strip()
        if not code or code not in objects:
            continue  # a made-up '(' inside a group may make another code
        if sum(1 for other in texts if other.partition("(")[0] == code) > 1:
            continue
        assert objects[code] == _decode_line(plan_for(used, code), text, "Europe/Brussels")
