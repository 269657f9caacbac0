"""Identifiers that become MQTT topic levels: one allow-list for config, ports and topics.

Pure and dependency-free. Rig and variant ids, slot holders and topic prefix levels are
checked here whole (`fullmatch`, so a trailing newline fails too), so a NUL byte, a wildcard
('+', '#'), an extra level ('/') or a broker-reserved '$' prefix can never reach paho or the
broker (a NUL in a topic makes mosquitto drop the connection and paho resend it forever).
"""

from __future__ import annotations

import re

from gateway.errors import IdentifierError, TopicError

#: Rig and variant ids: lower-case letters, digits and '-', 1 to 32 characters.
RIG_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
VARIANT_ID_RE = RIG_ID_RE
#: Slot holders (the tester's broker user name): also '_', 1 to 64 characters.
HOLDER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: One level of the topic prefix (the prefix may have several levels: "site-1/p1").
PREFIX_LEVEL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_MAX_PREFIX_LEVELS = 8

#: Variant ids that would stand where a holder's own topics do (`p1/R/slot/H/schedule`,
#: `p1/R/slot/H/session`): refused.
RESERVED_VARIANT_IDS = frozenset({"schedule", "session"})
#: Rig ids the lab's own topics use (`p1/lab/notice/...`): refused.
RESERVED_RIG_IDS = frozenset({"lab"})


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    """Return `value` when it matches `pattern` whole; otherwise raise IdentifierError."""
    if not isinstance(value, str):
        raise IdentifierError(f"{kind} must be a string, not {type(value).__name__}")
    # fullmatch, not match with '$': '$' would accept a trailing newline.
    if pattern.fullmatch(value) is None:
        raise IdentifierError(f"invalid {kind} {value!r}: must be {rule}")
    return value


def validate_rig_id(value: object) -> str:
    """Return the rig id unchanged if it is allowed ([a-z0-9][a-z0-9-]{0,31}, not reserved)."""
    rig = _check("rig id", value, RIG_ID_RE, "[a-z0-9][a-z0-9-]{0,31}")
    if rig in RESERVED_RIG_IDS:
        raise IdentifierError(f"rig id {rig!r} is reserved: p1/{rig}/... are the lab's topics")
    return rig


def validate_variant_id(value: object) -> str:
    """Return the variant id unchanged if it is allowed ([a-z0-9][a-z0-9-]{0,31}, not
    reserved), else raise."""
    variant = _check("variant id", value, VARIANT_ID_RE, "[a-z0-9][a-z0-9-]{0,31}")
    if variant in RESERVED_VARIANT_IDS:
        raise IdentifierError(
            f"variant id {variant!r} is reserved: p1/R/slot/H/{variant} is a holder's own topic"
        )
    return variant


def validate_holder(value: object) -> str:
    """Return the slot holder unchanged if it is allowed ([a-z0-9][a-z0-9_-]{0,63}), else raise."""
    return _check("holder", value, HOLDER_RE, "[a-z0-9][a-z0-9_-]{0,63}")


def validate_topic_prefix(value: object) -> str:
    """Return the topic prefix if each of its 1-8 '/'-separated levels is [A-Za-z0-9_-]+."""
    if not isinstance(value, str):
        raise TopicError(f"topic prefix must be a string, not {type(value).__name__}")
    levels = value.split("/")
    if len(levels) > _MAX_PREFIX_LEVELS or not all(PREFIX_LEVEL_RE.fullmatch(x) for x in levels):
        raise TopicError(
            f"invalid topic prefix {value!r}: must be 1-{_MAX_PREFIX_LEVELS} levels of "
            "[A-Za-z0-9_-], separated by '/'"
        )
    return value
