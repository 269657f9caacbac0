"""The memoised telegram JSON is byte for byte the general encoder's, for every telegram.

`telegram_body` memoises each line's JSON by the decoder's record of the line
(`Telegram.lines`); `reference_telegram_body` encodes the objects with the general encoder
alone. Both must give the same bytes: over the corpus, over live-like streams (clock and
instantaneous values move), over made-up lines, and for objects mappings of any shape.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import corpus
from gateway.bench.decode import corpus_telegrams, live_variant
from gateway.errors import GatewayError
from gateway.p1 import SPEC_NAMES, Frame, Framer, Telegram, decode_telegram
from gateway.p1.decoder import clear_caches
from gateway.publish import payload as pl
from tests.p1.telegrams import telegram
from tests.publish.test_corpus_payloads import as_text

FRAMES = [
    event.raw
    for entry in corpus.entries()
    for event in Framer().feed(entry.read())
    if isinstance(event, Frame)
]
CODES = sorted(
    {
        line.partition(b"(")[0].decode("latin-1")
        for frame in FRAMES
        for line in frame.split(b"\r\n")
        if b"(" in line and not line.startswith(b"(")
    }
)


def decoded(raw: bytes, spec: str = "auto") -> Telegram | None:
    """The telegram, or None when the decoder refuses the bytes."""
    try:
        return decode_telegram(raw, spec)
    except GatewayError:
        return None


def assert_same_body(t: Telegram) -> None:
    """The memoised body is the reference body, and its numbers are the meter's digits."""
    body = pl.telegram_body(t)
    assert body == pl.reference_telegram_body(t)
    parsed = json.loads(b"{" + body + b"}", parse_float=Decimal, parse_int=Decimal)
    assert as_text(parsed["objects"]) == as_text(t.objects)


def test_every_corpus_frame_cold_warm_and_live_like() -> None:
    """Each corpus frame: decoded with empty memos, again (every line a memo hit), and as 12
    live-like variants; the bodies equal the reference bodies every time."""
    clear_caches()
    pl.clear_line_memo()
    telegrams = [t for t in (decoded(raw) for raw in FRAMES) if t is not None]
    assert len(telegrams) >= 30
    for t in telegrams:
        assert_same_body(t)  # the first sight of every line
    for t in telegrams:
        assert_same_body(t)  # every line memoised
    for raw in FRAMES:
        again = decoded(raw)
        if again is not None:
            assert_same_body(again)  # decoder memo hits: the records are shared
    bench = corpus_telegrams()
    for step in range(1, 13):
        for b in bench:
            live = decoded(live_variant(b, step).raw)
            assert live is not None
            assert_same_body(live)


def test_a_repeated_line_is_one_record_paired_with_its_object() -> None:
    """Decoding the same frame twice hands out the same records; each record's code is its
    object's very key and its object equals the decoded one, digit for digit."""
    clear_caches()
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5").read()
    first, second = decode_telegram(raw), decode_telegram(raw)
    assert first.lines is not None and second.lines is not None
    assert len(first.lines) == len(first.objects)
    for (code, obj), one, two in zip(
        second.objects.items(), first.lines, second.lines, strict=True
    ):
        assert one is two and two is not None
        assert two[0] is code
        assert as_text(two[1]) == as_text(obj)


def test_objects_without_their_records_are_encoded_from_themselves() -> None:
    """Edited objects (a Telegram made without records, as the contract asks) or records that
    do not pair one to one with the objects: the body comes from the objects themselves."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5").read()
    real = decode_telegram(raw)
    pl.telegram_body(real)  # its lines memoised
    edited = {code: {**obj, "unit": "edited"} for code, obj in real.objects.items()}
    own = Telegram(real.raw, real.spec, real.header, real.meter_time, edited)
    assert pl.telegram_body(own) == pl.reference_telegram_body(own)
    assert pl.telegram_body(own).count(b'"unit":"edited"') == len(edited)
    assert real.lines is not None
    fewer = Telegram(real.raw, real.spec, real.header, None, edited, real.lines[:-1])
    assert pl.telegram_body(fewer) == pl.reference_telegram_body(fewer)
    renamed = {code + " ": obj for code, obj in real.objects.items()}
    keys = Telegram(real.raw, real.spec, real.header, None, renamed, real.lines)
    assert pl.telegram_body(keys) == pl.reference_telegram_body(keys)


def test_the_line_memo_stays_bounded() -> None:
    """Three times the bound of distinct lines: each generation holds at most the bound."""
    pl.clear_line_memo()
    clear_caches()
    base = corpus_telegrams()[0]
    for step in range(3 * pl.MAX_MEMO_LINES // 4):
        t = decoded(live_variant(base, step).raw)
        assert t is not None
        pl.telegram_body(t)
    # the bound is checked before each telegram: a generation may exceed it by one telegram
    assert all(len(memo) < pl.MAX_MEMO_LINES + 100 for memo in pl._LINE_MEMOS)
    assert len(pl._LINE_MEMOS[1]) > 0  # it did roll over


GROUP_TEXT = st.text(alphabet="0123456789.*-:SWswABCDEFabcdef kWhm3()", max_size=16)
METER_NUMBER = st.builds(
    lambda sign, whole, frac, unit: f"{sign}{whole}{'.' + frac if frac else ''}{unit}",
    st.sampled_from(["", "-"]),
    st.text("0123456789", min_size=1, max_size=8),
    st.text("0123456789", max_size=4),
    st.sampled_from(["", "*kWh", "*kW", "*V", "*A", "*m3", "*kvarh"]),
)


@settings(max_examples=300, deadline=None)
@given(
    made_up=st.lists(
        st.tuples(
            st.sampled_from(CODES),
            st.lists(st.one_of(GROUP_TEXT, METER_NUMBER), min_size=0, max_size=4),
        ),
        max_size=12,
    ),
    spec=st.sampled_from(("auto", *SPEC_NAMES)),
    eol=st.sampled_from(["\r\n", "\n"]),
)
def test_made_up_lines_encode_as_the_reference(
    made_up: list[tuple[str, list[str]]], spec: str, eol: str
) -> None:
    """Known codes with arbitrary groups (repeated codes, LF-only ends too), decoded twice:
    the memoised body equals the reference body both times."""
    texts = [code + "".join(f"({group})" for group in groups) for code, groups in made_up]
    raw = telegram(*texts, eol=eol)
    for _ in range(2):
        t = decoded(raw, spec)
        if t is None:
            return
        assert_same_body(t)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.decimals(),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),  # trailing zeros: 1.100
    st.floats(),
)
OBJECTS = st.dictionaries(
    st.one_of(st.text(max_size=6), st.integers()),
    st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers(0, 3)),
        st.one_of(SCALARS, st.lists(SCALARS, max_size=3)),
        max_size=4,
    ),
    max_size=4,
)


def text_or_error(encode: Any, value: Any) -> bytes | str:
    """What an encoder makes of a value: its bytes (or text), or its PayloadError's message."""
    try:
        text = encode(value)
    except pl.PayloadError as exc:
        return "refused: " + str(exc)
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)


@settings(max_examples=500, deadline=None)
@given(objects=OBJECTS, meter_time=st.one_of(st.none(), st.text(max_size=8), st.integers()))
def test_any_objects_mapping_encodes_or_is_refused_as_the_reference(
    objects: dict[Any, Any], meter_time: Any
) -> None:
    """Objects of any shape: the encoder of a new line (`_object_json`) gives the reference's
    text or its refusal, and so does the body of a Telegram without records."""
    for obj in objects.values():
        assert text_or_error(pl._object_json, obj) == text_or_error(pl.encode_json, obj)
    t = Telegram(b"", "V5", "X", meter_time, objects)
    assert text_or_error(pl.telegram_body, t) == text_or_error(pl.reference_telegram_body, t)
