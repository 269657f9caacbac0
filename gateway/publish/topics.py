"""MQTT topics, built only from allow-listed identifiers (`gateway.identifiers`, re-exported).

A topic is only ever built from validated parts, so a NUL byte, a wildcard ('+', '#'), an extra
level ('/') or a broker-reserved '$' prefix can never reach paho or the broker (a NUL in a topic
makes mosquitto drop the connection, and paho resends that message on every reconnect, forever).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gateway.errors import TopicError
from gateway.identifiers import (
    HOLDER_RE,
    PREFIX_LEVEL_RE,
    RIG_ID_RE,
    VARIANT_ID_RE,
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)
from gateway.notices import MESSAGE_EXPIRY_SECONDS, notice_topic, validate_notice_id

__all__ = [
    "HOLDER_RE",
    "PREFIX_LEVEL_RE",
    "RIG_ID_RE",
    "VARIANT_ID_RE",
    "SlotTopicKind",
    "TopicBuilder",
    "validate_holder",
    "validate_rig_id",
    "validate_topic_prefix",
    "validate_variant_id",
]


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

    def schedule(self, holder: str) -> str:
        """`p1/R/slot/H/schedule`: the holder's own slots, retained."""
        validate_holder(holder)
        return f"{self.prefix}/{self.rig}/slot/{holder}/schedule"

    def session(self, holder: str) -> str:
        """`p1/R/slot/H/session`: the holder's session start and end markers."""
        validate_holder(holder)
        return f"{self.prefix}/{self.rig}/slot/{holder}/session"

    def calendar(self) -> str:
        """`p1/R/calendar`: the rig's busy times without names, retained."""
        return f"{self.prefix}/{self.rig}/calendar"

    def rig_schedule(self) -> str:
        """`p1/R/schedule`: the rig's whole schedule as the lab publishes it, retained."""
        return f"{self.prefix}/{self.rig}/schedule"

    def schedule_applied(self) -> str:
        """`p1/R/schedule/applied`: the rig's answer to the lab's schedule, retained."""
        return f"{self.prefix}/{self.rig}/schedule/applied"

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

    def notice(self, ident: str) -> str:
        """A notice about this rig, retained: p1/R/notice/ID (every tester reads it); raises
        IdentifierError for what is no notice id (`gateway.notices`)."""
        return notice_topic(self.prefix, self.rig, validate_notice_id(ident))

    def expiry(self, topic: str) -> int | None:
        """The MQTT 5 message expiry a retained topic goes out with: notices fade, else None."""
        notices = f"{self.prefix}/{self.rig}/notice/"
        return MESSAGE_EXPIRY_SECONDS if topic.startswith(notices) else None


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
