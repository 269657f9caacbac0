"""What a routed reception becomes: its messages, after the session markers due before it.

Pure: it numbers (the outbox's seqs), chains (the router's session book) and builds topics and
payloads; the publisher enqueues what it answers, in that order. A telegram becomes `telegram`
and `raw` with one seq and one `prev_seq`; an invalid frame becomes `invalid`; a session edge
becomes a `session` marker on the holder's topic, with no variant and no seq.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.publish import payload as pl
from gateway.publish.outbox import SESSION_KIND
from gateway.publish.router import Route, Router
from gateway.publish.sessions import Edge
from gateway.publish.topics import SlotTopicKind, TopicBuilder


@dataclass(frozen=True, slots=True)
class Prepared:
    """A reception encoded once, on arrival: its kind, raw bytes and payload tail."""

    kind: str
    """'telegram' or 'invalid'."""
    raw: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to enqueue."""

    variant: str
    seq: int
    kind: str
    topic: str
    payload: bytes
    wall_ns: int
    prev_seq: int | None = None


class Emitter:
    """Turns routes and session edges into messages, in order; see the module docstring."""

    def __init__(self, topics: TopicBuilder, take_seq: Callable[[str], int], router: Router[Any]):
        self.topics = topics
        self._take_seq = take_seq
        self._router = router

    def marker(self, edge: Edge) -> Outgoing:
        """A session marker, for the holder's `session` topic."""
        s = edge.session
        data = pl.session_payload(edge.event, s.start_ns, s.end_ns, edge.at_ns)
        return Outgoing("", 0, SESSION_KIND, self.topics.session(s.holder), data, edge.at_ns)

    def messages(self, route: Route[Prepared]) -> list[Outgoing]:
        """The markers due before the reception, then its own messages (none without holder)."""
        out = [self.marker(edge) for edge in route.edges] if route.edges else []
        holder = route.holder
        if holder is None:
            return out
        variant, item, wall = route.reception.variant, route.reception.item, route.wall_ns
        seq = self._take_seq(variant)
        prev = self._router.sessions.link(holder, variant, route.session, seq)
        data = pl.envelope(self.topics.rig, variant, seq, wall, item.body, prev)
        slot = self.topics.slot
        if item.kind == "telegram":
            topic = slot(holder, variant, SlotTopicKind.TELEGRAM)
            out.append(Outgoing(variant, seq, "telegram", topic, data, wall, prev))
            topic = slot(holder, variant, SlotTopicKind.RAW)
            out.append(Outgoing(variant, seq, "raw", topic, item.raw, wall, prev))
        else:
            topic = slot(holder, variant, SlotTopicKind.INVALID)
            out.append(Outgoing(variant, seq, "invalid", topic, data, wall, prev))
        return out
