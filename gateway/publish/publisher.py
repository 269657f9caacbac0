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
through a queue (see `gateway.publish.mqtt`). What to send, delete and commit is decided by the
outbox (`gateway.publish.outbox`, no IO), under this module's lock: this is the shell around it.

Slot edges. The router gives each holder's session `start` and `end` in routing order: they
go in the same queue as the telegrams, which carry their chain's `prev_seq`; the session state
is committed with them (`sessions`). Retained schedules and calendar: `board`.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.errors import GatewayError, IdentifierError, SpoolError
from gateway.p1.telegram import Telegram
from gateway.publish import payload as pl
from gateway.publish import reports as rp
from gateway.publish.board import Board
from gateway.publish.clock import SystemClockProbe
from gateway.publish.emit import Emitter, Outgoing
from gateway.publish.emit import Prepared as _Prepared
from gateway.publish.mqtt import CONTROL_WINDOW as CONTROL_WINDOW
from gateway.publish.mqtt import (
    CallbackFailed,
    Connected,
    ConnectFailed,
    ConnectRefused,
    Disconnected,
    MqttLink,
    split_receive_maximum,
)
from gateway.publish.outbox import SESSION_KIND, Hold, Outbox, ReadSpool, SpoolMessage
from gateway.publish.reports import SubmitOutcome, liveness_of, publisher_status
from gateway.publish.router import Reception, Route, Router
from gateway.publish.schedule import SlotSchedule
from gateway.publish.sessions import SessionBook
from gateway.publish.settings import PublisherSettings
from gateway.publish.spool import Spool
from gateway.publish.topics import TopicBuilder, check_publishable_topic, validate_variant_id
from gateway.threadnames import name_this_thread
from gateway.timefmt import rfc3339_utc

_READ_CHUNK = 256
#: The writer's wake-up interval while receptions are held for the clock (it polls the clock).
_WORKER_TICK = 0.25
#: How long the network thread gathers PUBACKs after a read while nothing waits to be sent.
ACK_LINGER_S = 0.1
#: Unacknowledged messages from which a connected publisher counts as lagging its input.
LAG_MESSAGES = 1000
#: How long a spool commit may take before the writer counts as stuck (slow SD cards).
WRITER_BUDGET_S = 30.0
#: A queue item that only wakes the writer thread.
_WAKE = object()


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
        spool: Spool | None = None,
    ):
        self.settings = settings
        self.topics = TopicBuilder(settings.rig, settings.mqtt.topic_prefix)
        self._clock_synced = clock_synced or SystemClockProbe()
        self._mono_ns = mono_ns
        self._wall_ns = wall_ns
        self._router: Router[_Prepared] = Router(
            schedule,
            require_sync=settings.require_sync,
            max_held=settings.max_held,
            sessions=SessionBook(end_lag_ns=round(settings.end_lag * 1e9)),
        )
        sp = settings.spool
        if spool is None:  # (tests pass one of their own)
            spool = Spool(sp.path, max_bytes=sp.max_bytes, max_dead=sp.max_dead)
        self._spool = spool
        self._board = Board(self.topics)
        self._edge_due_ns: int | None = None  # when the clock alone next brings a session edge
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
        # The queue's state and rules: everything in it is read and changed under _lock.
        self._outbox = Outbox(
            window=settings.mqtt.window,
            control_window=CONTROL_WINDOW,
            qos=settings.mqtt.qos,
            seq_block=sp.seq_block,
            max_pending=sp.max_pending,
            max_dead=sp.max_dead,
        )
        self._emitter = Emitter(self.topics, self._outbox.take_seq, self._router)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._counters = rp.PublisherCounters()  # the shell's; status() adds the outbox's
        self._valid_variants: set[str] = set()
        self._flushing = 0
        self._last_error: str | None = None
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
            first = spool.read_from(0, 1)
            fresh = self._outbox.restore(
                reserved=spool.seq_reservations(),
                max_id=spool.max_id,
                unacked=spool.count,
                first_id=first[0].id if first else None,
                dead_letters=spool.dead_count(),
            )
            if fresh:
                spool.reserve(fresh)
            state = spool.edge_state()
            self._router.sessions = SessionBook(
                state, unclean=spool.unclean, end_lag_ns=self._router.sessions.end_lag_ns
            )
            self._board = Board(self.topics, state.announced)
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
            connected = self._outbox.ready and self._link.connected
            self._publish_control_locked(
                topic,
                pl.status_payload(self.settings.rig, "offline", reason="shutdown"),
                first=True,
            )
            end = min(deadline, time.monotonic() + 1.0)
            while connected and not self._outbox.control_settled(topic):
                if time.monotonic() >= end:
                    break
                self._idle.wait(0.05)
            self._outbox.halt()
        self._link.stop(timeout=max(0.1, deadline - time.monotonic() - 0.5))
        self._stop_worker = True
        self._events.put(_WAKE)
        if self._worker is not None:
            # The last batch's commit gets what is left of `timeout`: a hung disk cannot
            # hold up the exit (what that loses: the messages of the last batch window).
            self._worker.join(timeout=max(0.1, deadline - time.monotonic()))
            if self._worker.is_alive():
                # Stuck in SQLite (a hung disk; outside `_lock`): closing would wait for its
                # mutex. SQLite's journal keeps the file whole; the exit releases the rest.
                self._last_error = "the spool writer did not stop (disk hung?): spool left open"
                return
        if not (self._outbox.pending or self._router.sessions.dirty or self._board.dirty):
            self._guarded(self._spool.mark_clean)  # all committed: the next start is clean
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
        self,
        variant: str,
        raw: bytes,
        reason: str,
        received_mono_ns: int,
        received_wall_ns: int,
        *,
        reason_code: str = "crc_mismatch",
        length: int | None = None,
    ) -> SubmitOutcome:
        """Route, number, spool and publish an invalid frame (its `reason_code`; `length` its
        whole length when `raw` is only its start). Never raises."""
        try:
            raw = bytes(raw)
            try:
                body = pl.invalid_body(raw, str(reason), reason_code, length)
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
            self._refresh_board_locked()
            return SubmitOutcome.ROUTED if routes[-1].holder else SubmitOutcome.UNROUTED

    def _reject(self, variant: str, kind: str, raw: bytes, reason: str) -> SubmitOutcome:
        """Set aside a reception that failed a local check."""
        with self._lock:
            self._counters.submitted += 1
            self._outbox.reject(str(variant), kind, raw, reason, self._wall_ns())
            self._last_error = reason
        return SubmitOutcome.REJECTED

    def _emit_locked(self, route: Route[_Prepared]) -> None:
        """Enqueue what one routed reception becomes: the session markers due before it, then
        its messages (telegram + raw, or invalid)."""
        for out in self._emitter.messages(route):
            self._enqueue_locked(out)

    def _refresh_board_locked(self) -> None:
        """Republish the holders' schedules and the calendar when they changed (a new schedule,
        a slot's end), as of the routing time reached; each goes again on every connect."""
        now = self._router.sessions.cursor
        if now is None or not self._board.due(now):
            return
        for topic, data in self._board.messages(self._router.schedule, now):
            if self._outbox.retain_state(topic, data):
                self._publish_control_locked(topic, data)

    def _enqueue_locked(self, m: Outgoing) -> None:
        """Add one message to the batch; publish it at once when it is next in line."""
        step = self._outbox.enqueue(
            m.variant,
            m.seq,
            m.kind,
            m.topic,
            m.payload,
            m.wall_ns,
            connected=self._link.connected,
            prev_seq=m.prev_seq,
        )
        if isinstance(step, SpoolMessage):
            self._send_locked(step)
        elif step is Hold.WAKE_WRITER:
            self._events.put(_WAKE)

    # --- sending -----------------------------------------------------------------------

    def _send_locked(self, msg: SpoolMessage) -> bool:
        """Hand `msg` to paho; True when it went (or was set aside), False to retry later."""
        props = None
        if msg.kind != SESSION_KIND:
            props = [("seq", str(msg.seq)), ("variant", msg.variant)]
            if msg.prev_seq is not None:
                props.append(("prev_seq", str(msg.prev_seq)))
        try:
            check_publishable_topic(msg.topic)
            result = self._link.publish(msg.topic, msg.payload, msg.qos, user_properties=props)
        except (GatewayError, ValueError, TypeError) as exc:
            reason = f"publish: {exc}"
            self._outbox.unsendable(msg, reason, self._wall_ns())
            self._last_error = reason
            self._idle.notify_all()
            return True
        if not result.accepted:
            return False
        if self._outbox.sent(msg, result.mid):
            self._link.hurry()  # the window is half full: stop gathering PUBACKs now
        return True

    def _refill_locked(self, writer: bool = False) -> int | None:
        """Fill the in-flight window in id order from memory; what one refill sends leaves
        corked, in as few segments as the socket allows. For the writer: the id from which
        the spool must be read next, if it must (`_refill` reads it outside the lock)."""
        outbox, link = self._outbox, self._link
        step = outbox.next_message(connected=link.connected, writer=writer)
        if isinstance(step, SpoolMessage):
            with link.corked():
                while isinstance(step, SpoolMessage):
                    if not self._send_locked(step):
                        return None
                    step = outbox.next_message(connected=link.connected, writer=writer)
        if isinstance(step, ReadSpool):
            return step.first_id
        if step is Hold.WAKE_WRITER:
            self._events.put(_WAKE)
        return None

    def _refill(self) -> None:
        """The writer's refill: from memory under the lock, from the spool outside it, so that
        a slow or hung disk holds up neither the readers' submits nor acks, status or stop."""
        while True:
            with self._lock:
                start = self._refill_locked(writer=True)
            if start is None:
                return
            rows = self._spool.read_from(start, _READ_CHUNK)  # the writer's own connection
            with self._lock:
                self._outbox.spool_read(start, rows)

    def _publish_control_locked(self, topic: str, data: bytes, *, first: bool = False) -> None:
        """Set a retained control message to go out when the control window has room (it
        replaces one waiting for the same topic); `first` puts it before the others."""
        none_waited = self._outbox.put_control(topic, data, first=first)
        self._pump_control_locked()
        if none_waited and self._outbox.control_waiting:
            self._link.hurry()  # the window just filled: read its PUBACKs now, not after a linger

    def _pump_control_locked(self) -> None:
        """Send waiting control messages while connected and the control window has room."""
        outbox, link, topics = self._outbox, self._link, self.topics
        while (item := outbox.next_control(connected=link.connected)) is not None:
            topic, data = item
            try:
                result = link.publish(topic, data, 1, retain=True, expiry_s=topics.expiry(topic))
            except (ValueError, TypeError) as exc:
                outbox.control_failed()
                self._last_error = f"control publish to {topic}: {exc}"
                continue
            # Not accepted: the connection just went; it waits again for the next connect.
            outbox.control_sent(topic, data, result.mid if result.accepted else None)
            if not result.accepted:
                return

    # --- acknowledgements and link events ----------------------------------------------

    def _take_acks(self) -> None:
        """The network thread's hand-over: apply the acknowledgements, refill from memory."""
        with self._lock:
            self._apply_acks_locked()
            self._refill_locked()

    def _ack_linger(self) -> float:
        """How long the network thread may gather PUBACKs: only while nothing waits, both windows
        are less than half full and no `flush` waits (lock-free; stale answers cost little)."""
        if self._flushing or not self._outbox.may_linger():
            return 0.0
        return ACK_LINGER_S

    def _apply_acks_locked(self) -> None:
        """Apply every acknowledgement the link has read, oldest first."""
        acks, outbox = self._link.acks, self._outbox
        if acks:
            while acks:
                event = acks.popleft()
                if not event.failure:
                    outbox.ack(event.generation, event.mid)
                    continue
                error = outbox.refuse(
                    event.generation, event.mid, event.reason, event.reason_code, self._wall_ns()
                )
                if error is not None:
                    self._last_error = error
            self._idle.notify_all()  # flush, stop and commit_now wait on what acks change
        if outbox.control_waiting:  # an acknowledgement may have freed a control slot
            self._pump_control_locked()

    def _handle_locked(self, event: object) -> None:
        """Apply one link event to the queue state."""
        if isinstance(event, Connected):
            since, rig = rfc3339_utc(self._wall_ns()), self.settings.rig
            online = pl.status_payload(rig, "online", protocol=event.protocol, since=since)
            self._outbox.connect(
                event.generation,
                windows=split_receive_maximum(self.settings.mqtt.window, event.receive_maximum),
                receive_maximum=event.receive_maximum,
                status=(self.topics.status(), online),
            )
            self._pump_control_locked()
        elif isinstance(event, Disconnected):
            self._outbox.disconnect()
        elif isinstance(event, ConnectRefused):
            self._counters.connect_refusals += 1
            self._last_error = f"broker refused connection: {event.reason} ({event.reason_code})"
        elif isinstance(event, ConnectFailed):
            self._counters.connect_failures += 1
        elif isinstance(event, CallbackFailed):
            self._last_error = f"paho callback {event.where}: {event.error}"

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
                due = self._edge_due_ns
                if due is not None:  # a session edge the clock brings
                    wait = min(wait, max(0.0, (due - self._wall_ns()) / 1e9))
                batch.append(self._events.get(timeout=wait))
                while len(batch) < 10_000:
                    batch.append(self._events.get_nowait())
            except queue.Empty:
                pass
            self._guarded(self._tick, batch)
            if self._stop_worker:
                self._guarded(self._commit)
                return
            if time.monotonic() >= next_commit or self._outbox.commit_requested:
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
        synced = self._clock_synced() if self.settings.require_sync else True
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
            if self._running:
                self._advance_time_locked(synced)
        self._refill()
        if refuse_v5 and self._link.protocol == "5":
            self._link.fall_back_to_311()

    def _advance_time_locked(self, synced: bool) -> None:
        """Give the session edges the clock brings by now; refresh the schedules if due."""
        router, now = self._router, self._wall_ns()
        for edge in router.advance_time(
            synced=synced, now_mono_ns=self._mono_ns(), now_wall_ns=now
        ):
            self._enqueue_locked(self._emitter.marker(edge))
        self._refresh_board_locked()
        due = router.sessions.next_due_ns()  # (not in the future: the clock is not trusted now)
        self._edge_due_ns = due if due is not None and due > now else None

    def _commit(self) -> None:
        """One group commit: new messages, acknowledged deletes, dead letters, seq reserves,
        and the session state as of the last message in it."""
        with self._lock:
            batch, snapshot = self._outbox.take_commit()
            book = self._router.sessions
            if book.dirty or self._board.dirty:
                state = dataclasses.replace(book.snapshot(), announced=self._board.snapshot())
                batch = dataclasses.replace(batch, edges=state)
        if not batch:
            with self._lock:
                self._outbox.committed(snapshot, batch)
                self._idle.notify_all()
            return
        try:
            result = self._spool.commit(batch)
        except SpoolError as exc:
            with self._lock:
                self._counters.spool_errors += 1
                self._last_error = str(exc)
                self._outbox.commit_failed(batch)
                if batch.edges is not None:  # write the state with the next commit
                    self._router.sessions.dirty = self._board.dirty = True
            return
        with self._lock:
            self._outbox.committed(
                snapshot, batch, dropped=result.dropped, dropped_ids=result.dropped_ids
            )
            self._idle.notify_all()
        self._refill()

    # --- the daemon's other calls ------------------------------------------------------

    def set_schedule(self, schedule: SlotSchedule) -> None:
        """Replace the slot schedule whole (on reload): open sessions are reconciled with it and
        the schedules republished now (once the clock is trusted)."""
        synced = self._clock_synced() if self.settings.require_sync else True
        with self._lock:
            self._router.replace_schedule(schedule)
            self._board.reschedule()
            if self._running:
                self._advance_time_locked(synced)
        self._events.put(_WAKE)

    def publish_catalogue(self, variants: Sequence[Mapping[str, Any]]) -> None:
        """Set the retained variant catalogue (no holder names); republished on every connect."""
        data = pl.catalogue_payload(self.settings.rig, variants)
        topic = self.topics.variants()
        with self._lock:
            self._outbox.retain_catalogue(topic, data)
            self._publish_control_locked(topic, data)

    def post_notice(self, topic: str, data: bytes) -> None:
        """Set a notice to go out, retained with its expiry, until the broker acknowledges it."""
        with self._lock:
            self._outbox.retain_notice(topic, data)
            self._publish_control_locked(topic, data)

    def take_acked_notices(self) -> list[str]:
        """The notice topics the broker acknowledged since the last call."""
        with self._lock:
            return self._outbox.take_acked_notices()

    def publish_health(self, variant: str, health: Mapping[str, Any]) -> None:
        """Set a port's retained health; republished on every connect. Raises PayloadError."""
        topic = self.topics.health(variant)
        data = pl.health_payload(self.settings.rig, variant, health)
        with self._lock:
            if self._outbox.retain_health(topic, data):
                self._publish_control_locked(topic, data)

    def publish_retained(self, topic: str, data: bytes) -> None:
        """Set one more retained message of the rig's (the schedule's `applied` answer); sent
        again on every connect, not again while unchanged."""
        with self._lock:
            if self._outbox.retain_state(topic, data):
                self._publish_control_locked(topic, data)

    def clear_health(self, variant: str) -> None:
        """Remove a variant's retained health (the variant left the rig)."""
        topic = self.topics.health(variant)
        with self._lock:
            self._outbox.forget_health(topic)
            self._publish_control_locked(topic, b"")

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every message is acknowledged; True if so."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1  # no PUBACK gathering while someone waits for them
            try:
                self._link.hurry()
                while self._outbox.outstanding > 0:
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
            target = self._outbox.request_commit()
            self._events.put(_WAKE)
            while not self._outbox.is_durable(target):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.2))
            return True

    def status(self) -> rp.PublisherStatus:
        """A consistent snapshot of the queue and the counters."""
        with self._lock:
            return publisher_status(
                self._counters,
                self._router,
                self._outbox,
                self._link,
                self._spool,
                self._last_error,
            )

    @property
    def lagging(self) -> bool:
        """True while connected with LAG_MESSAGES or more unacknowledged (a flood, a spool
        draining): the reader should yield a moment, or under the GIL it starves the writer
        and paho's thread. Lock-free. False while disconnected (the spool takes the input)."""
        outbox = self._outbox
        return outbox.ready and self._link.connected and outbox.outstanding >= LAG_MESSAGES

    @property
    def liveness_max_age(self) -> float:
        """The longest any liveness budget can be (for sizing the systemd watchdog)."""
        m = self.settings.mqtt
        return max(WRITER_BUDGET_S, m.reconnect_max_delay + 15.0)

    def liveness(self) -> rp.PublisherLiveness:
        """For the watchdog: the network thread and the writer thread alive and progressing."""
        return liveness_of(self._link, self._worker, self._worker_beat, WRITER_BUDGET_S)

    @property
    def link(self) -> MqttLink:
        """The MQTT link (its subscriptions, tests and diagnostics)."""
        return self._link
