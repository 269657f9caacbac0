"""Every corpus telegram the decoder reads becomes a contract payload with exact values."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal

import pytest

from gateway import corpus
from gateway.errors import GatewayError
from gateway.p1 import decode_telegram
from gateway.publish import payload as pl


def as_text(value: object) -> object:
    """Numbers as their exact text (so 4.4260 and 4.426 differ), recursively."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, Mapping):
        return {k: as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_text(v) for v in value]
    raise TypeError(type(value))


def decodable() -> list[corpus.CorpusEntry]:
    """The corpus entries the decoder accepts."""
    out = []
    for e in corpus.entries():
        try:
            decode_telegram(e.read())
        except GatewayError:
            continue
        out.append(e)
    return out


@pytest.mark.parametrize("entry", decodable(), ids=lambda e: e.name)
def test_corpus_telegram_payload_is_exact(entry: corpus.CorpusEntry) -> None:
    """JSON parsed with Decimal equals the decoder's objects; the envelope is the contract's."""
    telegram = decode_telegram(entry.read())
    data = pl.envelope("rig-a", "v", 7, 1_795_885_392_123_456_789, pl.telegram_body(telegram))
    parsed = json.loads(data.decode("utf-8"), parse_float=Decimal, parse_int=Decimal)
    assert parsed["objects"] == telegram.objects
    assert as_text(parsed["objects"]) == as_text(telegram.objects)  # the very digits
    assert (parsed["spec"], parsed["header"], parsed["meter_time"]) == (
        telegram.spec,
        telegram.header,
        telegram.meter_time,
    )


def test_most_of_the_corpus_is_covered() -> None:
    """The check above runs on a good share of the corpus, not on nothing."""
    assert len(decodable()) >= 30
