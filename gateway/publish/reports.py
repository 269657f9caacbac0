"""What the publisher reports: the outcome of a submit, its counters, status and liveness."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.publish.mqtt import MqttLink
    from gateway.publish.outbox import Outbox
    from gateway.publish.router import Router
    from gateway.publish.spool import Spool


class SubmitOutcome(Enum):
    """What became of one submitted reception."""

    ROUTED = "routed"
    """Routed to a holder: published and/or spooled."""
    UNROUTED = "unrouted"
    """Received outside every slot: goes to no slot topic."""
    HELD = "held"
    """Held until the wall clock is synchronised."""
    REJECTED = "rejected"
    """Failed a local check (identifier, encoding): set aside as a dead letter."""
    STOPPED = "stopped"
    """The publisher is not running."""


@dataclass(slots=True)
class PublisherCounters:
    """Monotonic counters since start (the lead logs and reports them)."""

    submitted: int = 0
    routed: int = 0
    unrouted: int = 0
    held: int = 0
    held_dropped: int = 0
    rebuilt: int = 0
    after_end: int = 0
    """Receptions routed to a holder after their session's `end` (handed over late)."""
    enqueued: int = 0
    """Messages (telegram + raw + invalid) created and spooled."""
    published: int = 0
    """Publish calls handed to paho (resends included)."""
    acked: int = 0
    refused: int = 0
    """Messages the broker refused (reason code >= 0x80): dead-lettered."""
    rejected_local: int = 0
    """Receptions/messages that failed a local check: dead-lettered."""
    dropped_full: int = 0
    """Messages dropped, oldest first, because the spool was full."""
    commits: int = 0
    spool_errors: int = 0
    """Failed spool commits or reads (the batch stays in memory and is retried)."""
    connects: int = 0
    disconnects: int = 0
    connect_refusals: int = 0
    connect_failures: int = 0
    protocol_fallbacks: int = 0
    callback_errors: int = 0
    paho_restarts: int = 0
    control_refused: int = 0
    stray_acks: int = 0
    internal_errors: int = 0
    """Unexpected exceptions caught in the writer or in submit (see last_error)."""


@dataclass(frozen=True, slots=True)
class PublisherStatus:
    """A snapshot for status reports and tests."""

    connected: bool
    protocol: str
    outstanding: int
    """Messages not yet acknowledged (spooled or waiting for the next commit)."""
    spooled: int
    """Committed rows in the spool."""
    spooled_bytes: int
    pending_commit: int
    inflight: int
    held: int
    dead_letters: int
    """Dead letters kept in the spool database."""
    last_error: str | None
    counters: PublisherCounters


@dataclass(frozen=True, slots=True)
class PublisherLiveness:
    """For the watchdog: is the network thread alive and progressing, is the writer looping?"""

    network_thread_alive: bool
    network_progress_age: float
    network_budget: float
    """How old network progress may be in the current state (connected: 10 s; away: the
    reconnect backoff plus the connect timeout, 30 s by default)."""
    writer_alive: bool
    writer_progress_age: float
    writer_budget: float
    connected: bool

    def ok(self, max_age: float | None = None) -> bool:
        """True when both threads live and progress: within their budgets, or `max_age` s."""
        net = self.network_budget if max_age is None else max_age
        writer = self.writer_budget if max_age is None else max_age
        return (
            self.network_thread_alive
            and self.writer_alive
            and self.network_progress_age <= net
            and self.writer_progress_age <= writer
        )


def publisher_status(
    counters: PublisherCounters,
    router: Router[Any],
    outbox: Outbox,
    link: MqttLink,
    spool: Spool,
    last_error: str | None,
) -> PublisherStatus:
    """The publisher's status from its parts (under its lock): the shell's `counters` with the
    router's, the queue's and the link's added."""
    merged = dataclasses.replace(
        counters,
        **dataclasses.asdict(router.counters),
        **dataclasses.asdict(outbox.counters),
        callback_errors=link.callback_errors,
        paho_restarts=link.restarts,
        protocol_fallbacks=link.fallbacks,
    )
    return PublisherStatus(
        connected=link.connected,
        protocol=link.protocol,
        outstanding=outbox.outstanding,
        spooled=spool.count,
        spooled_bytes=spool.bytes,
        pending_commit=outbox.pending,
        inflight=outbox.inflight,
        held=router.held,
        dead_letters=outbox.dead_letters,
        last_error=last_error,
        counters=merged,
    )


def liveness_of(
    link: MqttLink, writer: threading.Thread | None, writer_beat: float, writer_budget: float
) -> PublisherLiveness:
    """The publisher's liveness: its link's network thread, its `writer` thread (which last
    looped at monotonic `writer_beat`)."""
    now = time.monotonic()
    return PublisherLiveness(
        network_thread_alive=link.thread_alive(),
        network_progress_age=max(0.0, now - link.progress_time()),
        network_budget=link.progress_budget(),
        writer_alive=bool(writer is not None and writer.is_alive()),
        writer_progress_age=max(0.0, now - writer_beat),
        writer_budget=writer_budget,
        connected=link.connected,
    )
