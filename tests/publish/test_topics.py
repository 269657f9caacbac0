"""Identifiers and topics: only allow-listed names ever become topic levels."""

from __future__ import annotations

import pytest

from gateway.errors import IdentifierError, TopicError
from gateway.publish import (
    SlotTopicKind,
    TopicBuilder,
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)
from gateway.publish.topics import check_publishable_topic

BAD_IDS = [
    "",
    "a\x00b",
    "a+b",
    "+",
    "a#",
    "#",
    "a/b",
    "/a",
    "$sys",
    "$a",
    "A",
    "a b",
    "a\n",
    "\na",
    "é",
    "-a",
    "a.b",
    "a" * 33,
]
BAD_HOLDERS = ["", "x\x00", "x+", "x#", "x/y", "$x", "X", "_x", "x y", "x\n", "a" * 65]


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize("validate", [validate_rig_id, validate_variant_id])
def test_bad_rig_and_variant_ids_are_refused(validate, value: str) -> None:
    """NUL, wildcards, '/', a leading '$', upper case, spaces, a trailing newline: refused."""
    with pytest.raises(IdentifierError):
        validate(value)


@pytest.mark.parametrize("value", BAD_HOLDERS)
def test_bad_holders_are_refused(value: str) -> None:
    """A holder name that could break a topic is refused."""
    with pytest.raises(IdentifierError):
        validate_holder(value)


def test_good_identifiers_pass_unchanged() -> None:
    """Valid names come back as they are, including the longest allowed."""
    assert validate_rig_id("rig-a") == "rig-a"
    assert validate_variant_id("fluvius-t211") == "fluvius-t211"
    assert validate_variant_id("a" * 32) == "a" * 32
    assert validate_holder("acme_lab-2") == "acme_lab-2"
    assert validate_holder("a" * 64) == "a" * 64


def test_non_strings_are_refused() -> None:
    """An identifier must be a str."""
    with pytest.raises(IdentifierError):
        validate_rig_id(7)


@pytest.mark.parametrize(
    "prefix", ["", "p1/", "/p1", "p1//x", "p+", "p#", "$p1", "p\x001", "p 1", "/".join("a" * 9)]
)
def test_bad_prefixes_are_refused(prefix: str) -> None:
    """A prefix with empty levels, wildcards, '$', NUL or too many levels is refused."""
    with pytest.raises(TopicError):
        validate_topic_prefix(prefix)


def test_topic_builder_builds_the_contract_topics() -> None:
    """The contract's topics, including the new invalid-frame topic."""
    t = TopicBuilder("rig-a", "p1")
    assert t.slot("acme", "v5", SlotTopicKind.TELEGRAM) == "p1/rig-a/slot/acme/v5/telegram"
    assert t.slot("acme", "v5", SlotTopicKind.RAW) == "p1/rig-a/slot/acme/v5/raw"
    assert t.slot("acme", "v5", SlotTopicKind.INVALID) == "p1/rig-a/slot/acme/v5/invalid"
    assert t.status() == "p1/rig-a/status"
    assert t.variants() == "p1/rig-a/variants"
    assert t.health("v5") == "p1/rig-a/health/v5"
    assert TopicBuilder("rig-a", "site-1/p1").status() == "site-1/p1/rig-a/status"


@pytest.mark.parametrize(
    "holder,variant", [("a/b", "v5"), ("acme", "v+"), ("$x", "v"), ("acme", "v\x00")]
)
def test_topic_builder_cannot_build_a_bad_topic(holder: str, variant: str) -> None:
    """Every part is validated again when the topic is built."""
    with pytest.raises(IdentifierError):
        TopicBuilder("rig-a").slot(holder, variant, SlotTopicKind.TELEGRAM)


def test_topic_builder_validates_rig_and_prefix() -> None:
    """A builder with a bad rig or prefix cannot be made."""
    with pytest.raises(IdentifierError):
        TopicBuilder("rig/a")
    with pytest.raises(TopicError):
        TopicBuilder("rig-a", "p1/#")


@pytest.mark.parametrize("topic", ["", "$SYS/x", "a/+/b", "a/#", "a\x00b", "a//b", "a/"])
def test_last_line_check_refuses_unpublishable_topics(topic: str) -> None:
    """The check before paho refuses wildcards, NUL, '$' and empty levels."""
    with pytest.raises(TopicError):
        check_publishable_topic(topic)


def test_notice_topics_take_only_notice_ids_and_fade() -> None:
    """A notice topic is built from a notice ID only; notices, and nothing else, expire."""
    topics = TopicBuilder("rig-a")
    ident = "20261206T214012345678Z-rig-a-3f9c01aa"
    topic = topics.notice(ident)
    assert topic == f"p1/rig-a/notice/{ident}"
    assert topics.expiry(topic) == 180 * 24 * 3600
    assert topics.expiry(topics.variants()) is None and topics.expiry(topics.status()) is None
    for bad in ("x/y", "#", ident + "/x", ident + "\n", ""):
        with pytest.raises(IdentifierError):
            topics.notice(bad)
