"""The publisher: routes receptions, numbers them, spools them and hands them to the broker.

Threads. The caller (the daemon's reader thread) calls `submit_telegram` / `submit_invalid`:
they encode, route, take a seq, append to the in-memory batch and, when nothing older waits,
publish at once (low latency: the packet is written to the socket in the caller's thread). The
link's network thread reads the broker's PUBACKs and applies them here (outside paho's locks),
refilling the in-flight window from memory; while nothing waits, it gathers PUBACKs for
ACK_LINGER_S so that one wake-up serves several telegrams. One writer thread owns the SQLite
spool: it wakes on its commit timer (or when asked), group-commits the batch every
`batch_interval`, deletes what the broker acknowledged, sets aside what it refused, and refills
the in-flight window from the spool in id order after an outage. Connection events reach it
through a queue (see `gateway.publish.mqtt`).

Guarantees. A message leaves the spool only after a successful PUBACK. While disconnected
nothing is published (messages wait in the spool, not in paho). After a reconnect or a restart
everything unacknowledged is sent again in id order, with its original seq: duplicates are
possible, gaps are not (except by the explicit drop-oldest policy when the spool is full, or
the last `batch_interval` of messages on a power cut or kill -9).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.errors import GatewayError, IdentifierError, SpoolError
from gateway.p1.telegram import Telegram
from gateway.publish import payload as pl
from gateway.publish.clock import SystemClockProbe
from gateway.publish.mqtt import (
    CONTROL_SLACK,
    Acked,
    CallbackFailed,
    Connected,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    MqttLink,
)
from gateway.publish.router import Reception, Route, Router
from gateway.publish.schedule import SlotSchedule
from gateway.publish.settings import PublisherSettings
from gateway.publish.spool import CommitBatch, DeadLetter, Spool, SpoolMessage
from gateway.publish.topics import (
    SlotTopicKind,
    TopicBuilder,
    check_publishable_topic,
    validate_variant_id,
)
from gateway.threadnames import name_this_thread
from gateway.timefmt import rfc3339_utc

_READ_CHUNK = 256
#: The writer's wake-up interval while receptions are held for the clock (it polls the clock).
_WORKER_TICK = 0.25
#: How long the network thread gathers PUBACKs after a read while nothing waits to be sent.
ACK_LINGER_S = 0.1
#: Retained control messages (status, catalogue, health) unacknowledged at once: paho's own
#: in-flight bound is the telegram window plus this. More wait in the publisher, the newest
#: payload per topic, and go out as PUBACKs come, so a burst of them (a health message per port
#: every few seconds and on every connect) never makes paho queue a telegram behind it.
CONTROL_WINDOW = CONTROL_SLACK
#: Unacknowledged messages from which a connected publisher counts as lagging its input.
LAG_MESSAGES = 1000


def split_receive_maximum(window: int, receive_maximum: int | None) -> tuple[int, int]:
    """The telegram and control windows under the broker's Receive Maximum (MQTT 5: how many
    QoS 1 messages it takes unacknowledged; None: no limit said). Together they stay within
    it: control messages get a quarter of it, at most CONTROL_WINDOW, at least one. At 1 there
    is nothing to split: both windows are 1, and the publisher caps the two kinds together."""
    if not receive_maximum:
        return max(1, window), CONTROL_WINDOW
    control = max(1, min(CONTROL_WINDOW, receive_maximum // 4))
    return max(1, min(window, receive_maximum - control)), control


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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A reception encoded once, on arrival: its raw bytes and its payload tail."""

    kind: str
    raw: bytes
    body: bytes


@dataclass(slots=True)
class PublisherCounters:
    """Monotonic counters since start (the lead logs and reports them)."""

    submitted: int = 0
    routed: int = 0
    unrouted: int = 0
    held: int = 0
    held_dropped: int = 0
    rebuilt: int = 0
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


#: How long a spool commit may take before the writer counts as stuck (slow SD cards).
WRITER_BUDGET_S = 30.0


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


class _Wake:
    """Queue item that only wakes the writer thread."""


_WAKE = _Wake()


@dataclass(slots=True)
class _Seqs:
    """Per variant: the next seq to hand out and the highest durably reserved."""

    block: int
    next: dict[str, int] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)

    def take(self, variant: str) -> int:
        """The variant's next seq."""
        n = self.next.get(variant, 1)
        self.next[variant] = n + 1
        return n

    def wanted(self) -> dict[str, int]:
        """Reservations to write now: for variants within half a block of their reserve."""
        out = {}
        for variant, nxt in self.next.items():
            if nxt + self.block // 2 > self.durable.get(variant, 0):
                out[variant] = nxt + self.block
        return out

    def ok(self, variant: str, seq: int) -> bool:
        """May this seq be published (is it durably reserved)?"""
        return seq <= self.durable.get(variant, 0)


class Publisher:
    """Routes, numbers, spools and publishes; see the module docstring. Thread-safe facade."""

    def __init__(
        self,
        settings: PublisherSettings,
        schedule: SlotSchedule,
        *,
        clock_synced: Callable[[], bool] | None = None,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
    ):
        self.settings = settings
        self.topics = TopicBuilder(settings.rig, settings.mqtt.topic_prefix)
        self._clock_synced = clock_synced or SystemClockProbe()
        self._mono_ns = mono_ns
        self._wall_ns = wall_ns
        self._router: Router[_Prepared] = Router(
            schedule, require_sync=settings.require_sync, max_held=settings.max_held
        )
        self._spool = Spool(
            settings.spool.path,
            max_bytes=settings.spool.max_bytes,
            max_dead=settings.spool.max_dead,
        )
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._link = MqttLink(
            settings.mqtt,
            client_id=settings.mqtt.client_id or f"p1gw-{settings.rig}",
            will_topic=self.topics.status(),
            will_payload=pl.status_payload(settings.rig, "offline", reason="connection lost"),
            events=self._events,
        )
        self._link.on_acks = self._take_acks
        self._link.linger = self._ack_linger
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counters = PublisherCounters()
        self._seqs = _Seqs(settings.spool.seq_block)
        self._valid_variants: set[str] = set()
        # Queue state (under _lock).
        self._next_id = 1
        self._pending: OrderedDict[int, SpoolMessage] = OrderedDict()
        self._acked_ids: set[int] = set()
        self._dead: list[DeadLetter] = []
        self._inflight: dict[int, SpoolMessage] = {}
        self._control_inflight: dict[int, str] = {}
        self._control_waiting: OrderedDict[str, bytes] = OrderedDict()
        self._buffer: deque[SpoolMessage] = deque()
        self._spool_read_at: int | None = None  # the writer's next spool read, set by a refill
        self._sent_upto = 1
        self._outstanding = 0
        self._ready = False
        self._generation = 0
        self._window = settings.mqtt.window
        self._control_window = CONTROL_WINDOW
        self._receive_maximum: int | None = None  # the broker's, for both kinds together
        self._commit_requested = False
        self._flushing = 0
        self._snapshots = 0
        self._durable_snapshot = 0
        self._catalogue: bytes | None = None
        self._health: dict[str, bytes] = {}
        self._last_error: str | None = None
        self._dead_count = 0
        # Life cycle.
        self._running = False
        self._stop_worker = False
        self._worker: threading.Thread | None = None
        self._worker_beat = time.monotonic()

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Open the spool (SpoolError), reserve seqs, start the writer and the MQTT link."""
        spool = self._spool.open()
        try:
            reserved = spool.seq_reservations()
            block = self.settings.spool.seq_block
            fresh = {v: r + block for v, r in reserved.items()}
            if fresh:
                spool.reserve(fresh)
            self._seqs.next = {v: r + 1 for v, r in reserved.items()}
            self._seqs.durable = dict(fresh)
            self._next_id = spool.max_id + 1
            self._outstanding = spool.count
            self._dead_count = spool.dead_count()
            first = spool.read_from(0, 1)
            self._sent_upto = first[0].id if first else self._next_id
            self._running = True
            self._stop_worker = False
            self._worker = threading.Thread(target=self._run, name="p1gw-spool", daemon=True)
            self._worker.start()
            self._link.start()
        except BaseException:
            self._running = False
            if self._worker is not None:
                self._stop_worker = True
                self._events.put(_WAKE)
                self._worker.join(timeout=5)
            spool.close()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within `timeout`, publish offline status, disconnect."""
        if not self._running:
            return
        deadline = time.monotonic() + timeout
        with self._lock:
            self._running = False
        self.flush(max(0.0, deadline - time.monotonic() - 1.0))
        with self._lock:
            topic = self.topics.status()
            connected = self._ready and self._link.connected
            self._publish_control_locked(
                topic,
                pl.status_payload(self.settings.rig, "offline", reason="shutdown"),
                first=True,
            )
            end = min(deadline, time.monotonic() + 1.0)
            while connected and not self._control_settled(topic):
                if time.monotonic() >= end:
                    break
                self._idle.wait(0.05)
            self._ready = False
        self._link.stop(timeout=max(0.1, deadline - time.monotonic() - 0.5))
        self._stop_worker = True
        self._events.put(_WAKE)
        if self._worker is not None:
            # The last batch's commit gets what is left of `timeout`: a hung disk cannot
            # hold up the exit (what that loses: the messages of the last batch window).
            self._worker.join(timeout=max(0.1, deadline - time.monotonic()))
            if self._worker.is_alive():
                # Stuck in SQLite (a hung disk, in a commit or a read: both run outside
                # `_lock`): closing would wait for the connection's mutex it holds, and stop
                # with it. SQLite's journal keeps the file whole; the process exit releases
                # the rest.
                self._last_error = "the spool writer did not stop (disk hung?): spool left open"
                return
        self._spool.close()

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the reader thread's side ------------------------------------------------------

    def submit_telegram(
        self, variant: str, telegram: Telegram, received_mono_ns: int, received_wall_ns: int
    ) -> SubmitOutcome:
        """Route, number, spool and (when possible) publish one decoded telegram. Never raises."""
        try:
            try:
                body = pl.telegram_body(telegram)
            except (pl.PayloadError, TypeError, ValueError) as exc:
                return self._reject(variant, "telegram", telegram.raw, f"encode: {exc}")
            item = _Prepared("telegram", telegram.raw, body)
            return self._submit(variant, item, received_mono_ns, received_wall_ns)
        except Exception as exc:
            return self._internal_error("submit_telegram", exc)

    def submit_invalid(
        self, variant: str, raw: bytes, reason: str, received_mono_ns: int, received_wall_ns: int
    ) -> SubmitOutcome:
        """Route, number, spool and publish a frame with a bad CRC (or unreadable). Never raises."""
        try:
            raw = bytes(raw)
            try:
                body = pl.invalid_body(raw, str(reason))
            except (pl.PayloadError, TypeError, ValueError) as exc:
                return self._reject(variant, "invalid", raw, f"encode: {exc}")
            item = _Prepared("invalid", raw, body)
            return self._submit(variant, item, received_mono_ns, received_wall_ns)
        except Exception as exc:
            return self._internal_error("submit_invalid", exc)

    def _internal_error(self, where: str, exc: Exception) -> SubmitOutcome:
        """A bug, not a bad telegram: count it, remember it, keep the reader loop alive."""
        with self._lock:
            self._counters.internal_errors += 1
            self._last_error = f"{where}: {type(exc).__name__}: {exc}"
        return SubmitOutcome.REJECTED

    def _submit(self, variant: str, item: _Prepared, mono: int, wall: int) -> SubmitOutcome:
        """Validate the variant, route the reception, emit what is routed."""
        if not self._running:
            return SubmitOutcome.STOPPED
        if variant not in self._valid_variants:
            try:
                validate_variant_id(variant)
            except IdentifierError as exc:
                return self._reject(str(variant), item.kind, item.raw, str(exc))
            self._valid_variants.add(variant)
        synced = self._clock_synced() if self.settings.require_sync else True
        now_mono, now_wall = self._mono_ns(), self._wall_ns()
        with self._lock:
            if self._link.acks:
                self._apply_acks_locked()
            self._counters.submitted += 1
            routes = self._router.accept(
                Reception(variant, mono, wall, item),
                synced=synced,
                now_mono_ns=now_mono,
                now_wall_ns=now_wall,
            )
            if not routes:
                return SubmitOutcome.HELD
            with self._link.corked():
                for route in routes:
                    self._emit_locked(route)
            return SubmitOutcome.ROUTED if routes[-1].holder else SubmitOutcome.UNROUTED

    def _reject(self, variant: str, kind: str, raw: bytes, reason: str) -> SubmitOutcome:
        """Set aside a reception that failed a local check."""
        with self._lock:
            self._counters.submitted += 1
            self._counters.rejected_local += 1
            self._add_dead_locked(
                DeadLetter(
                    self._take_id_locked(),
                    str(variant),
                    None,
                    kind,
                    None,
                    raw,
                    reason,
                    None,
                    self._wall_ns(),
                    in_spool=False,
                )
            )
            self._last_error = reason
        return SubmitOutcome.REJECTED

    def _take_id_locked(self) -> int:
        """A fresh message id; keeps `_sent_upto` from stalling on ids that never queue."""
        i = self._next_id
        self._next_id += 1
        if self._sent_upto == i:
            self._sent_upto = i + 1
        return i

    def _emit_locked(self, route: Route[_Prepared]) -> None:
        """Turn one routed reception into its messages (telegram + raw, or invalid)."""
        rec = route.reception
        item = rec.item
        if route.holder is None:
            return
        seq = self._seqs.take(rec.variant)
        if not self._seqs.ok(rec.variant, seq):
            self._request_commit_locked()
        envelope = pl.envelope(self.settings.rig, rec.variant, seq, route.wall_ns, item.body)
        slot = self.topics.slot
        holder, variant = route.holder, rec.variant
        if item.kind == "telegram":
            topic = slot(holder, variant, SlotTopicKind.TELEGRAM)
            self._enqueue_locked(variant, seq, "telegram", topic, envelope, route.wall_ns)
            topic = slot(holder, variant, SlotTopicKind.RAW)
            self._enqueue_locked(variant, seq, "raw", topic, item.raw, route.wall_ns)
        else:
            topic = slot(holder, variant, SlotTopicKind.INVALID)
            self._enqueue_locked(variant, seq, "invalid", topic, envelope, route.wall_ns)

    def _enqueue_locked(
        self, variant: str, seq: int, kind: str, topic: str, data: bytes, wall_ns: int
    ) -> None:
        """Add one message to the batch; publish it at once when it is next in line."""
        msg = SpoolMessage(
            self._next_id, variant, seq, kind, topic, data, self.settings.mqtt.qos, wall_ns
        )
        self._next_id += 1
        self._pending[msg.id] = msg
        self._outstanding += 1
        self._counters.enqueued += 1
        if len(self._pending) > self.settings.spool.max_pending:
            self._drop_oldest_pending_locked()
        if msg.id == self._sent_upto and self._room_locked() and self._seqs.ok(variant, seq):
            self._send_locked(msg)
        elif self._ready:
            self._events.put(_WAKE)

    def _drop_oldest_pending_locked(self) -> None:
        """The in-memory batch is over its bound (commits failing): drop its oldest message."""
        _, old = self._pending.popitem(last=False)
        self._outstanding -= 1
        self._counters.dropped_full += 1
        for mid, m in list(self._inflight.items()):
            if m.id == old.id:
                del self._inflight[mid]
        if self._sent_upto == old.id:
            self._sent_upto += 1

    def _request_commit_locked(self) -> None:
        """Ask the writer for a commit now (a seq reservation is needed)."""
        if not self._commit_requested:
            self._commit_requested = True
            self._events.put(_WAKE)

    # --- sending -----------------------------------------------------------------------

    def _send_locked(self, msg: SpoolMessage) -> bool:
        """Hand `msg` to paho; True when it went (or was set aside), False to retry later."""
        try:
            check_publishable_topic(msg.topic)
            result = self._link.publish(
                msg.topic,
                msg.payload,
                msg.qos,
                user_properties=[("seq", str(msg.seq)), ("variant", msg.variant)],
            )
        except (GatewayError, ValueError, TypeError) as exc:
            self._counters.rejected_local += 1
            self._dead_letter_locked(msg, f"publish: {exc}", None)
            self._sent_upto = max(self._sent_upto, msg.id + 1)
            return True
        if not result.accepted:
            return False
        self._inflight[result.mid] = msg
        if len(self._inflight) == (self._window + 1) // 2:
            self._link.hurry()  # the window is half full: stop gathering PUBACKs now
        self._sent_upto = max(self._sent_upto, msg.id + 1)
        self._counters.published += 1
        return True

    def _dead_letter_locked(self, msg: SpoolMessage, reason: str, code: int | None) -> None:
        """Set a message aside: out of the queue, into the dead table at the next commit."""
        in_spool = self._pending.pop(msg.id, None) is None
        self._add_dead_locked(
            DeadLetter(
                msg.id,
                msg.variant,
                msg.seq,
                msg.kind,
                msg.topic,
                msg.payload,
                reason,
                code,
                self._wall_ns(),
                in_spool=in_spool,
            )
        )
        self._outstanding -= 1
        self._last_error = reason
        self._idle.notify_all()

    def _add_dead_locked(self, letter: DeadLetter) -> None:
        """Queue a dead letter for the next commit (bounded: keep the newest max_dead)."""
        self._dead.append(letter)
        excess = len(self._dead) - self.settings.spool.max_dead
        if excess > 0:
            # Still delete the spool rows of the letters not kept.
            kept = self._dead[excess:]
            for gone in self._dead[:excess]:
                if gone.in_spool:
                    self._acked_ids.add(gone.id)
            self._dead = kept

    def _next_unsent_locked(self, writer: bool = False) -> SpoolMessage | None:
        """The oldest message not yet handed to paho: from what was read of the spool first,
        then the batch.

        None when nothing waits, or when the next message must first be read from the spool:
        the writer then notes where (`_spool_read_at`, read by `_refill` outside the lock),
        any other thread wakes the writer. Only the writer steps over a gap in the ids.
        """
        if self._sent_upto >= self._next_id:  # everything issued went out: nothing to scan
            return None
        while self._buffer:
            head = self._buffer[0]
            if head.id < self._sent_upto or head.id in self._acked_ids:
                self._buffer.popleft()
                continue
            return head
        if self._sent_upto <= self._spool.max_id:
            if writer:
                self._spool_read_at = self._sent_upto
            else:
                self._events.put(_WAKE)
            return None
        for msg in self._pending.values():
            if msg.id >= self._sent_upto:
                if msg.id != self._sent_upto and not writer:
                    # A gap: its messages may be in a commit right now (out of the batch,
                    # not yet in the spool's max_id). Only the writer may step over it.
                    self._events.put(_WAKE)
                    return None
                return msg
        return None

    def _refill_locked(self, writer: bool = False) -> None:
        """Fill the in-flight window in id order from memory; what one refill sends leaves
        corked, in as few segments as the socket allows. Reading the spool is `_refill`'s."""
        room = self._room_locked
        msg = self._next_unsent_locked(writer) if room() else None
        if msg is None:
            return
        with self._link.corked():
            while msg is not None:
                if not self._seqs.ok(msg.variant, msg.seq):
                    self._request_commit_locked()
                    return
                if not self._send_locked(msg):
                    return
                msg = self._next_unsent_locked(writer) if room() else None

    def _refill(self) -> None:
        """The writer's refill: from memory under the lock, from the spool outside it, so that
        a slow or hung disk holds up neither the readers' submits nor acks, status or stop."""
        while True:
            with self._lock:
                self._spool_read_at = None
                self._refill_locked(writer=True)
                start = self._spool_read_at
            if start is None:
                return
            rows = self._spool.read_from(start, _READ_CHUNK)  # the writer's own connection
            with self._lock:
                if self._sent_upto != start or self._buffer:
                    continue  # moved on meanwhile (none of the cases known to do so): look again
                if not rows:
                    self._sent_upto = self._spool.max_id + 1
                    continue
                dead = {d.id for d in self._dead}
                live = [r for r in rows if r.id not in self._acked_ids and r.id not in dead]
                if live:
                    self._buffer.extend(live)
                else:
                    self._sent_upto = rows[-1].id + 1

    def _room_locked(self) -> bool:
        """Whether the link is up and the in-flight window has room."""
        return (
            self._ready
            and self._link.connected
            and len(self._inflight) < self._window
            and self._under_receive_maximum_locked()
        )

    def _under_receive_maximum_locked(self) -> bool:
        """Whether one more message of either kind stays within the broker's Receive Maximum
        (binding only at 1: above it, the two windows already add up to no more)."""
        cap = self._receive_maximum
        return cap is None or len(self._inflight) + len(self._control_inflight) < cap

    def _publish_control_locked(self, topic: str, data: bytes, *, first: bool = False) -> None:
        """Set a retained control message (status, catalogue, health) to go out: now if the
        control window has room, else when it has (replacing an older payload still waiting
        for the same topic); `first` puts it before the others waiting."""
        waiting = self._control_waiting
        was_waiting = bool(waiting)
        waiting[topic] = data
        if first:
            waiting.move_to_end(topic, last=False)
        self._pump_control_locked()
        if waiting and not was_waiting:
            self._link.hurry()  # the window just filled: read its PUBACKs now, not after a linger

    def _pump_control_locked(self) -> None:
        """Send waiting control messages while connected and the control window has room."""
        waiting = self._control_waiting
        while waiting and len(self._control_inflight) < self._control_window:
            if not (self._ready and self._link.connected and self._under_receive_maximum_locked()):
                return
            topic, data = waiting.popitem(last=False)
            try:
                result = self._link.publish(topic, data, 1, retain=True)
            except (ValueError, TypeError) as exc:
                self._counters.control_refused += 1
                self._last_error = f"control publish to {topic}: {exc}"
                continue
            if not result.accepted:  # the connection just went: the next connect resends
                waiting[topic] = data
                waiting.move_to_end(topic, last=False)
                return
            self._control_inflight[result.mid] = topic

    def _control_settled(self, topic: str) -> bool:
        """Whether no control message for `topic` waits or is unacknowledged."""
        return topic not in self._control_waiting and topic not in self._control_inflight.values()

    # --- events (writer thread) ---------------------------------------------------------

    def _take_acks(self) -> None:
        """The network thread's hand-over: apply the acknowledgements, refill from memory."""
        with self._lock:
            self._apply_acks_locked()
            self._refill_locked()

    def _ack_linger(self) -> float:
        """How long the network thread may gather PUBACKs: only while nothing waits to be sent,
        the telegram and control windows are less than half full and no `flush` waits
        (lock-free reads; a stale answer costs little)."""
        inflight = len(self._inflight)
        if self._flushing or self._outstanding > inflight or 2 * inflight >= self._window:
            return 0.0
        if self._control_waiting or 2 * len(self._control_inflight) >= self._control_window:
            return 0.0
        return ACK_LINGER_S

    def _apply_acks_locked(self) -> None:
        """Apply every acknowledgement the link has read, oldest first."""
        acks = self._link.acks
        while acks:
            self._on_ack_locked(acks.popleft())
        if self._control_waiting:  # a telegram's PUBACK may have freed the one shared slot
            self._pump_control_locked()

    def _handle_locked(self, event: object) -> None:
        """Apply one link event to the queue state."""
        if isinstance(event, Connected):
            self._on_connected_locked(event)
        elif isinstance(event, Disconnected):
            self._ready = False
            self._counters.disconnects += 1
        elif isinstance(event, ConnectRefused):
            self._counters.connect_refusals += 1
            self._last_error = f"broker refused connection: {event.reason} ({event.reason_code})"
        elif isinstance(event, ConnectFailed):
            self._counters.connect_failures += 1
        elif isinstance(event, CallbackFailed):
            self._last_error = f"paho callback {event.where}: {event.error}"

    def _on_connected_locked(self, event: Connected) -> None:
        """A new connection: resend everything unacknowledged in order, republish state."""
        self._counters.connects += 1
        self._generation = event.generation
        if self._inflight:
            self._sent_upto = min(self._sent_upto, min(m.id for m in self._inflight.values()))
        self._inflight.clear()
        self._control_inflight.clear()
        # The retained state goes out again whole; of what waited, only removals are kept.
        cleared = [t for t, data in self._control_waiting.items() if data == b""]
        self._control_waiting.clear()
        self._buffer.clear()
        self._window, self._control_window = split_receive_maximum(
            self.settings.mqtt.window, event.receive_maximum
        )
        self._receive_maximum = event.receive_maximum or None
        self._ready = True
        waiting = self._control_waiting
        waiting[self.topics.status()] = pl.status_payload(
            self.settings.rig, "online", protocol=event.protocol, since=rfc3339_utc(self._wall_ns())
        )
        if self._catalogue is not None:
            waiting[self.topics.variants()] = self._catalogue
        waiting.update((topic, b"") for topic in cleared)
        for variant, data in self._health.items():
            waiting[self.topics.health(variant)] = data
        self._pump_control_locked()

    def _on_ack_locked(self, event: Acked) -> None:
        """PUBACK: forget the message (never committed, or deleted at the next commit)."""
        if event.generation != self._generation:
            self._counters.stray_acks += 1
            return
        msg = self._inflight.pop(event.mid, None)
        if msg is None:
            topic = self._control_inflight.pop(event.mid, None)
            if topic is None:
                self._counters.stray_acks += 1
            elif event.failure:
                self._counters.control_refused += 1
                self._last_error = f"broker refused {topic}: {event.reason}"
            self._pump_control_locked()
            self._idle.notify_all()
            return
        if event.failure:
            self._counters.refused += 1
            self._dead_letter_locked(msg, f"broker refused: {event.reason}", event.reason_code)
            return
        self._counters.acked += 1
        if self._pending.pop(msg.id, None) is None:
            self._acked_ids.add(msg.id)
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._idle.notify_all()

    # --- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        """Writer loop: events, clock poll, refill, group commit, paho liveness."""
        name_this_thread("p1gw-spool")
        interval = self.settings.spool.batch_interval
        next_commit = time.monotonic() + interval
        while True:
            now = time.monotonic()
            self._worker_beat = now
            batch: list[Any] = []
            try:
                wait = max(0.0, next_commit - now)
                if self._router.held:  # poll the clock for the held receptions
                    wait = min(wait, _WORKER_TICK)
                batch.append(self._events.get(timeout=wait))
                while len(batch) < 10_000:
                    batch.append(self._events.get_nowait())
            except queue.Empty:
                pass
            self._guarded(self._tick, batch)
            if self._stop_worker:
                self._guarded(self._commit)
                return
            if time.monotonic() >= next_commit or self._commit_requested:
                self._guarded(self._commit)
                next_commit = time.monotonic() + interval
            if self._running:
                self._guarded(self._link.revive)

    def _guarded(self, step: Callable[..., object], *args: Any) -> None:
        """Run one writer step; the writer must not die: count, remember, go on."""
        try:
            step(*args)
        except SpoolError as exc:
            with self._lock:
                self._last_error = str(exc)
                self._counters.spool_errors += 1
        except Exception as exc:
            with self._lock:
                self._last_error = f"writer: {type(exc).__name__}: {exc}"
                self._counters.internal_errors += 1

    def _tick(self, batch: list[Any]) -> None:
        """Handle queued events, release held receptions, refill the window."""
        refuse_v5 = False
        poll = self._router.held > 0
        synced = self._clock_synced() if poll and self.settings.require_sync else True
        with self._lock:
            for event in batch:
                if event is _WAKE:
                    continue
                self._handle_locked(event)
                if isinstance(event, ConnectRefused) and event.unsupported_protocol:
                    refuse_v5 = True
            self._apply_acks_locked()
            if poll:
                for route in self._router.poll(
                    synced=synced, now_mono_ns=self._mono_ns(), now_wall_ns=self._wall_ns()
                ):
                    self._emit_locked(route)
        self._refill()
        if refuse_v5 and self._link.protocol == "5":
            self._link.fall_back_to_311()

    def _commit(self) -> None:
        """One group commit: new messages, acknowledged deletes, dead letters, seq reserves."""
        with self._lock:
            self._commit_requested = False
            self._snapshots += 1
            snapshot = self._snapshots
            inserts = list(self._pending.values())
            self._pending.clear()
            deletes = self._acked_ids
            self._acked_ids = set()
            dead = self._dead
            self._dead = []
            reservations = self._seqs.wanted()
        batch = CommitBatch(inserts, deletes, dead, reservations)
        if not batch:
            with self._lock:
                self._durable_snapshot = snapshot
                self._idle.notify_all()
            return
        try:
            result = self._spool.commit(batch)
        except SpoolError as exc:
            with self._lock:
                self._counters.spool_errors += 1
                self._last_error = str(exc)
                dead_ids = {d.id for d in self._dead}
                restored = OrderedDict(
                    (m.id, m)
                    for m in inserts
                    if m.id not in self._acked_ids and m.id not in dead_ids
                )
                self._acked_ids -= {m.id for m in inserts}
                self._acked_ids |= set(deletes)
                unwritten = {m.id for m in inserts}
                self._dead = [
                    dataclasses.replace(d, in_spool=d.in_spool and d.id not in unwritten)
                    for d in dead + self._dead
                ]
                restored.update(self._pending)
                self._pending = restored
            return
        with self._lock:
            self._counters.commits += 1
            self._durable_snapshot = snapshot
            self._seqs.durable.update(reservations)
            self._dead_count = min(self._dead_count + len(dead), self.settings.spool.max_dead)
            if result.dropped and result.dropped_ids is not None:
                first, last = result.dropped_ids
                already = {i for i in self._acked_ids if first <= i <= last}
                self._acked_ids -= already
                for mid, m in list(self._inflight.items()):
                    if first <= m.id <= last:
                        del self._inflight[mid]
                self._outstanding -= result.dropped - len(already)
                self._counters.dropped_full += result.dropped - len(already)
                self._buffer.clear()
            self._idle.notify_all()
        self._refill()

    # --- the daemon's other calls ------------------------------------------------------

    def set_schedule(self, schedule: SlotSchedule) -> None:
        """Replace the slot schedule whole (on reload); receptions from now on use it."""
        with self._lock:
            self._router.replace_schedule(schedule)

    def publish_catalogue(self, variants: Sequence[Mapping[str, Any]]) -> None:
        """Set the retained variant catalogue (no holder names); republished on every connect."""
        data = pl.catalogue_payload(self.settings.rig, variants)
        with self._lock:
            self._catalogue = data
            self._publish_control_locked(self.topics.variants(), data)

    def publish_health(self, variant: str, health: Mapping[str, Any]) -> None:
        """Set a port's retained health; republished on every connect. Raises PayloadError."""
        topic = self.topics.health(variant)
        data = pl.health_payload(self.settings.rig, variant, health)
        with self._lock:
            if self._health.get(variant) == data:
                return
            self._health[variant] = data
            self._publish_control_locked(topic, data)

    def clear_health(self, variant: str) -> None:
        """Remove a variant's retained health (the variant left the rig)."""
        topic = self.topics.health(variant)
        with self._lock:
            self._health.pop(variant, None)
            self._publish_control_locked(topic, b"")

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every message is acknowledged; True if so."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1  # no PUBACK gathering while someone waits for them
            try:
                self._link.hurry()
                while self._outstanding > 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.2))
                return True
            finally:
                self._flushing -= 1

    def commit_now(self, timeout: float = 5.0) -> bool:
        """Commit everything submitted so far now; True once it is durable (within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._snapshots + 1
            self._commit_requested = True
            self._events.put(_WAKE)
            while self._durable_snapshot < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.2))
            return True

    def status(self) -> PublisherStatus:
        """A consistent snapshot of the queue and the counters."""
        with self._lock:
            rc = self._router.counters
            counters = dataclasses.replace(self._counters)
            counters.routed, counters.unrouted = rc.routed, rc.unrouted
            counters.held, counters.held_dropped, counters.rebuilt = (
                rc.held,
                rc.held_dropped,
                rc.rebuilt,
            )
            counters.callback_errors = self._link.callback_errors
            counters.paho_restarts = self._link.restarts
            counters.protocol_fallbacks = self._link.fallbacks
            return PublisherStatus(
                connected=self._link.connected,
                protocol=self._link.protocol,
                outstanding=self._outstanding,
                spooled=self._spool.count,
                spooled_bytes=self._spool.bytes,
                pending_commit=len(self._pending),
                inflight=len(self._inflight),
                held=self._router.held,
                dead_letters=self._dead_count,
                last_error=self._last_error,
                counters=counters,
            )

    @property
    def lagging(self) -> bool:
        """True while connected with LAG_MESSAGES or more messages unacknowledged: the input
        outruns the broker link (a flood, or a spool draining after an outage).

        The caller's thread (the daemon's reader) should then yield for a moment: under
        CPython's GIL a reader that always has input otherwise starves the writer and paho's
        thread, and publishing collapses while the backlog grows. Cheap, lock-free read.
        While disconnected it is False: the spool takes the input, nothing is gained by waiting.
        """
        return self._ready and self._link.connected and self._outstanding >= LAG_MESSAGES

    @property
    def liveness_max_age(self) -> float:
        """The longest any liveness budget can be (for sizing the systemd watchdog)."""
        m = self.settings.mqtt
        return max(WRITER_BUDGET_S, m.reconnect_max_delay + 15.0)

    def liveness(self) -> PublisherLiveness:
        """For the watchdog: the network thread and the writer thread alive and progressing."""
        now = time.monotonic()
        worker = self._worker
        return PublisherLiveness(
            network_thread_alive=self._link.thread_alive(),
            network_progress_age=max(0.0, now - self._link.progress_time()),
            network_budget=self._link.progress_budget(),
            writer_alive=bool(worker is not None and worker.is_alive()),
            writer_progress_age=max(0.0, now - self._worker_beat),
            writer_budget=WRITER_BUDGET_S,
            connected=self._link.connected,
        )

    @property
    def link(self) -> MqttLink:
        """The MQTT link (tests and diagnostics)."""
        return self._link
