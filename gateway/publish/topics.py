"""Identifiers and MQTT topics: an allow-list for every name that becomes a topic level.

Pure and dependency-free, so the config loader can import the validators too. A topic is only
ever built from validated parts, so a NUL byte, a wildcard ('+', '#'), an extra level ('/') or a
broker-reserved '$' prefix can never reach paho or the broker (a NUL in a topic makes mosquitto
drop the connection and paho resend it forever: see FIELD-NOTES).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from gateway.errors import IdentifierError, TopicError

#: Rig and variant ids: lower-case letters, digits and '-', 1 to 32 characters.
RIG_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
VARIANT_ID_RE = RIG_ID_RE
#: Slot holders (the tester's broker user name): also '_', 1 to 64 characters.
HOLDER_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: One level of the topic prefix (the prefix may have several levels: "site-1/p1").
PREFIX_LEVEL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_MAX_PREFIX_LEVELS = 8


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    """Return `value` when it matches `pattern` whole; otherwise raise IdentifierError."""
    if not isinstance(value, str):
        raise IdentifierError(f"{kind} must be a string, not {type(value).__name__}")
    # fullmatch, not match with '$': '$' would accept a trailing newline.
    if pattern.fullmatch(value) is None:
        raise IdentifierError(f"invalid {kind} {value!r}: must be {rule}")
    return value


def validate_rig_id(value: object) -> str:
    """Return the rig id unchanged if it is allowed ([a-z0-9][a-z0-9-]{0,31}), else raise."""
    return _check("rig id", value, RIG_ID_RE, "[a-z0-9][a-z0-9-]{0,31}")


def validate_variant_id(value: object) -> str:
    """Return the variant id unchanged if it is allowed ([a-z0-9][a-z0-9-]{0,31}), else raise."""
    return _check("variant id", value, VARIANT_ID_RE, "[a-z0-9][a-z0-9-]{0,31}")


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


class SlotTopicKind(Enum):
    """The three per-holder topics of a variant."""

    TELEGRAM = "telegram"
    RAW = "raw"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class TopicBuilder:
    """Builds the gateway's topics for one rig; it can only produce valid topics."""

    rig: str
    prefix: str = "p1"

    def __post_init__(self) -> None:
        validate_rig_id(self.rig)
        validate_topic_prefix(self.prefix)

    @property
    def base(self) -> str:
        """The rig's own subtree: `p1/R`."""
        return f"{self.prefix}/{self.rig}"

    def slot(self, holder: str, variant: str, kind: SlotTopicKind) -> str:
        """`p1/R/slot/H/V/{telegram,raw,invalid}` for a validated holder and variant."""
        validate_holder(holder)
        validate_variant_id(variant)
        return f"{self.prefix}/{self.rig}/slot/{holder}/{variant}/{kind.value}"

    def status(self) -> str:
        """`p1/R/status`: online/offline, retained; also the last will."""
        return f"{self.prefix}/{self.rig}/status"

    def variants(self) -> str:
        """`p1/R/variants`: the retained variant catalogue."""
        return f"{self.prefix}/{self.rig}/variants"

    def health(self, variant: str) -> str:
        """`p1/R/health/V`: a port's retained health."""
        validate_variant_id(variant)
        return f"{self.prefix}/{self.rig}/health/{variant}"


def check_publishable_topic(topic: str) -> str:
    """Last line of defence before paho: refuse wildcards, NUL, '$' and empty levels."""
    if (
        not topic
        or topic.startswith("$")
        or any(c in topic for c in "\x00+#")
        or "" in topic.split("/")
        or len(topic.encode("utf-8")) > 65535
    ):
        raise TopicError(f"refusing to publish to topic {topic!r}")
    return topic
