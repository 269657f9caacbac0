"""Notice ids, topics and payloads (gateway.notices): pure, shared by the lab and the gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import IdentifierError
from gateway.notices import (
    notice_id,
    notice_payload,
    notice_topic,
    random_token,
    validate_notice_id,
)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2999, 1, 1), timezones=st.just(UTC)
)
writers = st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True)
tokens = st.from_regex(r"[0-9a-f]{8}", fullmatch=True)


@given(times, times, writers, writers, tokens, tokens)
def test_ids_sort_by_time_whatever_the_writer(
    a: datetime, b: datetime, wa: str, wb: str, ta: str, tb: str
) -> None:
    """An earlier notice's id sorts before a later one's, across writers."""
    if a < b:
        assert notice_id(a, wa, ta) < notice_id(b, wb, tb)


@given(times, writers, tokens)
def test_an_id_is_valid_and_a_topic_level(at: datetime, writer: str, token: str) -> None:
    """The id passes its own check and holds no wildcard or level separator."""
    ident = notice_id(at, writer, token)
    assert validate_notice_id(ident) == ident
    assert not set("+#/ \0") & set(ident)


def test_the_form_of_an_id() -> None:
    """UTC time to the microsecond, the writer, 8 hex digits; a local time is converted."""
    at = datetime(2027, 3, 1, 9, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert notice_id(at, "lab", "0a1b2c3d") == "20270301T083005123456Z-lab-0a1b2c3d"
    assert len(random_token()) == 8 and random_token() != random_token()
    for bad in ("", "x", "20270301T083005123456Z-Lab-0a1b2c3d", "20270301T083005Z-lab-0a1b2c3d"):
        with pytest.raises(IdentifierError):
            validate_notice_id(bad)
    with pytest.raises(ValueError):
        notice_id(datetime(2027, 1, 1), "lab", "0a1b2c3d")  # naive


def test_topics_and_payloads() -> None:
    """About a rig under its own subtree, lab-wide under `lab`; the payload's keys."""
    at = datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
    assert notice_topic("p1", "rig-a", "I") == "p1/rig-a/notice/I"
    assert notice_topic("site/p1", None, "I") == "site/p1/lab/notice/I"
    body = notice_payload("I", at, "rig-a", "operator", "new firmware", variant="be-1")
    assert body == {
        "id": "I",
        "at": "2027-03-01T08:30:00Z",
        "rig": "rig-a",
        "variant": "be-1",
        "kind": "operator",
        "text": "new firmware",
    }
    changed = notice_payload("I", at, "rig-a", "firmware", "t", before="50213", after="50217")
    assert (changed["before"], changed["after"]) == ("50213", "50217")
    with pytest.raises(ValueError):
        notice_payload("I", at, None, "gossip", "t")
