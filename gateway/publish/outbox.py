"""The outbox: the publisher's queue as a state machine, without IO.

It numbers messages (ids order the queue, seqs number each variant's receptions and are never
handed out twice across restarts), keeps the batch waiting for the next group commit, the
telegram and control in-flight windows, and what the broker acknowledged; it answers what to
hand to the link next, what one commit writes and deletes, and what a failed commit puts back.

No threads, sockets, SQLite or clock of its own: the shell (`gateway.publish.publisher`) calls
it under its lock, passes the link's state and the time in, and does what it answers: publish
this message, wake the writer, read the spool from here, commit this batch.

The rules it keeps:
- Messages go to the link in id order, from the oldest unacknowledged: after a reconnect or a
  restart everything unacknowledged goes again, with its original seq (duplicates are
  possible, gaps are not).
- A message leaves the queue (is deleted from the spool) only after a successful PUBACK, or
  when it is set aside as a dead letter (refused by the broker or by a local check), or by the
  explicit drop-oldest bounds.
- A seq is published only once it is durably reserved.
- A session marker (kind `session`) is published only once it is committed, with the session
  state it changes (so a kill -9 never makes a `start` or `end` go twice), and the drop-oldest
  bounds never drop one.
- Only the writer (`writer=True`) steps over ids missing from memory: they may be in a commit
  at that moment, out of the batch and not yet in the spool.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from gateway.publish.sessions import EdgeState

#: The kind of a session marker (`p1/R/slot/H/session`): no variant, no seq.
SESSION_KIND = "session"


@dataclass(frozen=True, slots=True)
class SpoolMessage:
    """One message as spooled: id orders the queue; seq is the variant's sequence number."""

    id: int
    variant: str
    seq: int
    kind: str
    """'telegram', 'raw' or 'invalid'."""
    topic: str
    payload: bytes
    qos: int
    received_ns: int
    prev_seq: int | None = None
    """The seq of the previous message of its chain (None: the first, or not in a chain)."""

    @property
    def size(self) -> int:
        """What the message counts against the spool's size bound."""
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside: refused by the broker or failing a local check."""

    id: int
    variant: str
    seq: int | None
    kind: str
    topic: str | None
    payload: bytes
    reason: str
    reason_code: int | None
    at_ns: int
    in_spool: bool = True
    """True when the message's row is in `spool` and must be deleted from it."""


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """What one group commit writes, in one transaction."""

    inserts: Sequence[SpoolMessage] = ()
    deletes: Collection[int] = ()
    dead: Sequence[DeadLetter] = ()
    reservations: Mapping[str, int] = field(default_factory=dict)
    edges: EdgeState | None = None
    """The session state as of the last message inserted (None: unchanged)."""

    def __bool__(self) -> bool:
        """True when there is anything to write."""
        return bool(
            self.inserts or self.deletes or self.dead or self.reservations or self.edges is not None
        )


class Hold(Enum):
    """Why no message can go to the link now."""

    IDLE = "idle"
    """Nothing to do: a PUBACK, a connect or a commit brings the next refill."""
    WAKE_WRITER = "wake writer"
    """The writer must step in: read the spool, step over a gap, or commit a seq reservation."""


@dataclass(frozen=True, slots=True)
class ReadSpool:
    """(To the writer) the next message is in the spool: read it from `first_id` on."""

    first_id: int


@dataclass(slots=True)
class OutboxCounters:
    """The queue's monotonic counters since start."""

    enqueued: int = 0
    """Messages (telegram + raw + invalid) created."""
    published: int = 0
    """Messages handed to the link (resends included)."""
    acked: int = 0
    refused: int = 0
    """Messages the broker refused (reason code >= 0x80): dead-lettered."""
    rejected_local: int = 0
    """Receptions/messages that failed a local check: dead-lettered."""
    dropped_full: int = 0
    """Messages dropped, oldest first, because the batch or the spool was full."""
    commits: int = 0
    connects: int = 0
    disconnects: int = 0
    control_refused: int = 0
    stray_acks: int = 0


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


class Outbox:
    """The queue's state and rules; see the module docstring. Not thread-safe: one lock outside."""

    def __init__(
        self,
        *,
        window: int,
        control_window: int,
        qos: int = 1,
        seq_block: int = 1000,
        max_pending: int = 100_000,
        max_dead: int = 10_000,
    ):
        self.counters = OutboxCounters()
        self._qos = qos
        self._max_pending = max_pending
        self._max_dead = max_dead
        self._seqs = _Seqs(seq_block)
        self._next_id = 1
        self._spool_max_id = 0  # the highest id committed (to the spool or the dead letters)
        self._pending: OrderedDict[int, SpoolMessage] = OrderedDict()  # the next commit's
        self._acked_ids: set[int] = set()  # committed and acknowledged: the next commit deletes
        self._acked_markers: set[int] = set()  # those of them that are session markers
        self._dead: list[DeadLetter] = []  # for the next commit
        self._dead_count = 0
        self._inflight: dict[int, SpoolMessage] = {}  # by the link's message id
        self._control_inflight: dict[int, str] = {}
        self._control_waiting: OrderedDict[str, bytes] = OrderedDict()
        self._catalogue: tuple[str, bytes] | None = None
        self._health: dict[str, bytes] = {}  # by topic
        self._retained: dict[str, bytes] = {}  # schedules and calendar, by topic
        self._notices: dict[str, bytes] = {}  # by topic, until the broker acknowledges one
        self._notices_acked: list[str] = []  # since `take_acked_notices`
        self._buffer: deque[SpoolMessage] = deque()  # read from the spool, not yet sent
        self._sent_upto = 1  # every id below went to the link (or needs not)
        self._outstanding = 0
        self._ready = False
        self._generation = 0
        self._window = window
        self._control_window = control_window
        self._receive_maximum: int | None = None  # the broker's, for both kinds together
        self._commit_requested = False
        self._snapshots = 0
        self._durable_snapshot = 0

    # --- state, read by the shell (lock-free reads are fine for hints) -----------------

    @property
    def ready(self) -> bool:
        """Connected (as far as the events applied say) and not stopping."""
        return self._ready

    @property
    def outstanding(self) -> int:
        """Messages not yet acknowledged (spooled or in the batch)."""
        return self._outstanding

    @property
    def pending(self) -> int:
        """Messages in the batch waiting for the next commit."""
        return len(self._pending)

    @property
    def inflight(self) -> int:
        """Messages handed to the link and not yet acknowledged on this connection."""
        return len(self._inflight)

    @property
    def control_inflight(self) -> int:
        """Control messages handed to the link and not yet acknowledged."""
        return len(self._control_inflight)

    @property
    def control_waiting(self) -> int:
        """Control messages waiting for room in the control window."""
        return len(self._control_waiting)

    @property
    def dead_letters(self) -> int:
        """Dead letters kept in the spool (as far as committed)."""
        return self._dead_count

    @property
    def receive_maximum(self) -> int | None:
        """The broker's Receive Maximum on this connection (None: it said none)."""
        return self._receive_maximum

    @property
    def commit_requested(self) -> bool:
        """Whether a commit is wanted before the commit timer's."""
        return self._commit_requested

    def may_linger(self) -> bool:
        """Whether the link may gather PUBACKs for a while: nothing waits to be sent and the
        telegram and control windows are less than half full."""
        inflight = len(self._inflight)
        if self._outstanding > inflight or 2 * inflight >= self._window:
            return False
        return not self._control_waiting and 2 * len(self._control_inflight) < self._control_window

    # --- start ---------------------------------------------------------------------------

    def restore(
        self,
        *,
        reserved: Mapping[str, int],
        max_id: int,
        unacked: int,
        first_id: int | None,
        dead_letters: int,
    ) -> dict[str, int]:
        """Take up a spool's state (its seq reservations, highest id, message count, first
        message's id, dead letters); the new reservations to write before anything is sent."""
        fresh = {v: r + self._seqs.block for v, r in reserved.items()}
        self._seqs.next = {v: r + 1 for v, r in reserved.items()}
        self._seqs.durable = dict(fresh)
        self._next_id = max_id + 1
        self._spool_max_id = max_id
        self._outstanding = unacked
        self._dead_count = dead_letters
        self._sent_upto = first_id if first_id is not None else self._next_id
        return fresh

    # --- new messages --------------------------------------------------------------------

    def take_seq(self, variant: str) -> int:
        """The variant's next seq (published once durably reserved: see `enqueue`)."""
        return self._seqs.take(variant)

    def enqueue(
        self,
        variant: str,
        seq: int,
        kind: str,
        topic: str,
        payload: bytes,
        wall_ns: int,
        *,
        connected: bool,
        prev_seq: int | None = None,
    ) -> SpoolMessage | Hold:
        """Add one message to the batch: the message itself when it may go to the link now."""
        msg = SpoolMessage(
            self._next_id, variant, seq, kind, topic, payload, self._qos, wall_ns, prev_seq
        )
        self._next_id += 1
        self._pending[msg.id] = msg
        self._outstanding += 1
        self.counters.enqueued += 1
        if len(self._pending) > self._max_pending:
            self._drop_oldest_pending()
        if kind == SESSION_KIND:  # goes once committed: ask for the commit now
            self._commit_requested = True
            return Hold.WAKE_WRITER
        if not self._seqs.ok(variant, seq) and not self._commit_requested:
            self._commit_requested = True
            return Hold.WAKE_WRITER
        if msg.id == self._sent_upto and self._room(connected) and self._seqs.ok(variant, seq):
            return msg
        return Hold.WAKE_WRITER if self._ready else Hold.IDLE

    def reject(self, variant: str, kind: str, raw: bytes, reason: str, at_ns: int) -> None:
        """Set aside a reception that failed a local check (it takes an id, never a seq)."""
        self.counters.rejected_local += 1
        letter = DeadLetter(
            self._take_id(), variant, None, kind, None, raw, reason, None, at_ns, in_spool=False
        )
        self._add_dead(letter)

    def _take_id(self) -> int:
        """A fresh message id; keeps `_sent_upto` from stalling on ids that never queue."""
        i = self._next_id
        self._next_id += 1
        if self._sent_upto == i:
            self._sent_upto = i + 1
        return i

    def _drop_oldest_pending(self) -> None:
        """The batch is over its bound (commits failing): drop its oldest message (never a
        session marker)."""
        old = next((m for m in self._pending.values() if m.kind != SESSION_KIND), None)
        if old is None:
            return
        del self._pending[old.id]
        self._outstanding -= 1
        self.counters.dropped_full += 1
        for mid, m in list(self._inflight.items()):
            if m.id == old.id:
                del self._inflight[mid]
        if self._sent_upto == old.id:
            self._sent_upto += 1

    # --- sending -------------------------------------------------------------------------

    def _room(self, connected: bool) -> bool:
        """Whether the link is up and the in-flight window has room."""
        return (
            self._ready
            and connected
            and len(self._inflight) < self._window
            and self._under_receive_maximum()
        )

    def _under_receive_maximum(self) -> bool:
        """Whether one more message of either kind stays within the broker's Receive Maximum
        (binding only at 1: above it, the two windows already add up to no more)."""
        cap = self._receive_maximum
        return cap is None or len(self._inflight) + len(self._control_inflight) < cap

    def next_message(
        self, *, connected: bool, writer: bool = False
    ) -> SpoolMessage | Hold | ReadSpool:
        """The next message to hand to the link, in id order; or why none may go now.

        `connected` is the link's own word; `writer` says the writer thread asks: only it
        reads the spool and steps over a gap in the ids (any other caller is told to wake it).
        """
        if not self._room(connected):
            return Hold.IDLE
        msg = self._next_unsent(writer)
        if not isinstance(msg, SpoolMessage):
            return msg
        if not self._seqs.ok(msg.variant, msg.seq) or (
            msg.kind == SESSION_KIND and msg.id in self._pending
        ):
            if self._commit_requested:
                return Hold.IDLE
            self._commit_requested = True
            return Hold.WAKE_WRITER
        return msg

    def _next_unsent(self, writer: bool) -> SpoolMessage | Hold | ReadSpool:
        """The oldest message not yet handed to the link: from what was read of the spool
        first, then the batch."""
        if self._sent_upto >= self._next_id:  # everything issued went out: nothing to scan
            return Hold.IDLE
        while self._buffer:
            head = self._buffer[0]
            if head.id < self._sent_upto or head.id in self._acked_ids:
                self._buffer.popleft()
                continue
            return head
        if self._sent_upto <= self._spool_max_id:
            return ReadSpool(self._sent_upto) if writer else Hold.WAKE_WRITER
        for msg in self._pending.values():
            if msg.id >= self._sent_upto:
                if msg.id != self._sent_upto and not writer:
                    # A gap: its messages may be in a commit right now (out of the batch,
                    # not yet committed). Only the writer may step over it.
                    return Hold.WAKE_WRITER
                return msg
        return Hold.IDLE

    def sent(self, msg: SpoolMessage, mid: int) -> bool:
        """The link took `msg` as message `mid`; True when the window just got half full (the
        link should then read PUBACKs now rather than gather them)."""
        self._inflight[mid] = msg
        if msg.id >= self._sent_upto:
            self._sent_upto = msg.id + 1
        self.counters.published += 1
        return len(self._inflight) == (self._window + 1) // 2

    def unsendable(self, msg: SpoolMessage, reason: str, at_ns: int) -> None:
        """The link (or a local check) refused `msg` outright: set it aside as a dead letter."""
        self.counters.rejected_local += 1
        self._dead_letter(msg, reason, None, at_ns)
        if msg.id >= self._sent_upto:
            self._sent_upto = msg.id + 1

    def spool_read(self, first_id: int, rows: Sequence[SpoolMessage]) -> None:
        """What the writer read from the spool for a `ReadSpool(first_id)`, in id order."""
        if self._sent_upto != first_id or self._buffer:
            return  # moved on meanwhile (none of the cases known to do so): look again
        if not rows:
            self._sent_upto = self._spool_max_id + 1
            return
        dead = {d.id for d in self._dead}
        live = [r for r in rows if r.id not in self._acked_ids and r.id not in dead]
        if live:
            self._buffer.extend(live)
        else:
            self._sent_upto = rows[-1].id + 1

    # --- acknowledgements ----------------------------------------------------------------

    def ack(self, generation: int, mid: int) -> None:
        """A successful PUBACK for message `mid` of connection `generation`."""
        if generation != self._generation:
            self.counters.stray_acks += 1
            return
        msg = self._inflight.pop(mid, None)
        if msg is None:
            topic = self._control_inflight.pop(mid, None)
            if topic is None:
                self.counters.stray_acks += 1
            elif self._notices.pop(topic, None) is not None:
                self._notices_acked.append(topic)
            return
        self.counters.acked += 1
        if self._pending.pop(msg.id, None) is None:
            self._acked_ids.add(msg.id)  # committed: the next commit deletes it
            if msg.kind == SESSION_KIND:
                self._acked_markers.add(msg.id)
        self._outstanding -= 1

    def refuse(self, generation: int, mid: int, reason: str, code: int, at_ns: int) -> str | None:
        """The broker refused message `mid` (reason code >= 0x80): a telegram becomes a dead
        letter. The problem to report, if any."""
        if generation != self._generation:
            self.counters.stray_acks += 1
            return None
        msg = self._inflight.pop(mid, None)
        if msg is None:
            topic = self._control_inflight.pop(mid, None)
            if topic is None:
                self.counters.stray_acks += 1
                return None
            self.counters.control_refused += 1
            return f"broker refused {topic}: {reason}"
        self.counters.refused += 1
        text = f"broker refused: {reason}"
        self._dead_letter(msg, text, code, at_ns)
        return text

    def _dead_letter(self, msg: SpoolMessage, reason: str, code: int | None, at_ns: int) -> None:
        """Set a message aside: out of the queue, into the dead letters at the next commit."""
        in_spool = self._pending.pop(msg.id, None) is None
        letter = DeadLetter(
            msg.id,
            msg.variant,
            msg.seq,
            msg.kind,
            msg.topic,
            msg.payload,
            reason,
            code,
            at_ns,
            in_spool=in_spool,
        )
        self._add_dead(letter)
        self._outstanding -= 1

    def _add_dead(self, letter: DeadLetter) -> None:
        """Keep a dead letter for the next commit (bounded: keep the newest max_dead)."""
        self._dead.append(letter)
        excess = len(self._dead) - self._max_dead
        if excess > 0:
            # Still delete the spool rows of the letters not kept.
            for gone in self._dead[:excess]:
                if gone.in_spool:
                    self._acked_ids.add(gone.id)
            self._dead = self._dead[excess:]

    # --- the connection ------------------------------------------------------------------

    def connect(
        self,
        generation: int,
        *,
        windows: tuple[int, int],
        receive_maximum: int | None,
        status: tuple[str, bytes],
    ) -> None:
        """A new connection with its (telegram, control) `windows` and the broker's Receive
        Maximum: resend everything unacknowledged from the oldest, and the retained state whole
        (the (topic, payload) `status` first, then catalogue, removals, health, notices)."""
        self.counters.connects += 1
        self._generation = generation
        if self._inflight:
            self._sent_upto = min(self._sent_upto, min(m.id for m in self._inflight.values()))
        self._inflight.clear()
        self._control_inflight.clear()
        # Of the control messages that waited, only removals are kept.
        cleared = [t for t, data in self._control_waiting.items() if data == b""]
        self._control_waiting.clear()
        self._buffer.clear()
        self._window, self._control_window = windows
        self._receive_maximum = receive_maximum or None
        self._ready = True
        waiting = self._control_waiting
        waiting[status[0]] = status[1]
        if self._catalogue is not None:
            waiting[self._catalogue[0]] = self._catalogue[1]
        waiting.update((topic, b"") for topic in cleared)
        waiting.update(self._health)
        waiting.update(self._retained)
        waiting.update(self._notices)

    def disconnect(self) -> None:
        """The connection ended: nothing more goes out until the next `connect`."""
        self._ready = False
        self.counters.disconnects += 1

    def halt(self) -> None:
        """Stopping: nothing more goes out."""
        self._ready = False

    # --- control messages (retained: status, catalogue, health, notices) -----------------

    def put_control(self, topic: str, payload: bytes, *, first: bool = False) -> bool:
        """Set a retained message to go out when the control window has room (replacing one
        waiting for the same topic); `first` puts it first. True when none waited before."""
        waiting = self._control_waiting
        was_empty = not waiting
        waiting[topic] = payload
        if first:
            waiting.move_to_end(topic, last=False)
        return was_empty

    def retain_catalogue(self, topic: str, payload: bytes) -> None:
        """The variant catalogue, sent again on every connect."""
        self._catalogue = (topic, payload)

    def retain_health(self, topic: str, payload: bytes) -> bool:
        """A port's health, sent again on every connect; False when it is unchanged."""
        if self._health.get(topic) == payload:
            return False
        self._health[topic] = payload
        return True

    def retain_state(self, topic: str, payload: bytes) -> bool:
        """A holder's schedule or the rig's calendar, sent again on every connect; False when
        it is unchanged."""
        if self._retained.get(topic) == payload:
            return False
        self._retained[topic] = payload
        return True

    def retain_notice(self, topic: str, payload: bytes) -> None:
        """A notice, sent again on every connect until the broker acknowledges it."""
        self._notices[topic] = payload

    def take_acked_notices(self) -> list[str]:
        """The notice topics acknowledged since the last call (to delete from the spool)."""
        acked, self._notices_acked = self._notices_acked, []
        return acked

    def forget_health(self, topic: str) -> None:
        """A port's health is no longer sent on connect (its variant left the rig)."""
        self._health.pop(topic, None)

    def next_control(self, *, connected: bool) -> tuple[str, bytes] | None:
        """The next control message (topic, payload) to hand to the link, if there is room."""
        if not self._control_waiting or len(self._control_inflight) >= self._control_window:
            return None
        if not (self._ready and connected and self._under_receive_maximum()):
            return None
        return self._control_waiting.popitem(last=False)

    def control_sent(self, topic: str, payload: bytes, mid: int | None) -> None:
        """The link took the control message as `mid`; None: it did not (the connection just
        went): it waits again, first."""
        if mid is not None:
            self._control_inflight[mid] = topic
            return
        self._control_waiting[topic] = payload
        self._control_waiting.move_to_end(topic, last=False)

    def control_failed(self) -> None:
        """The link refused a control message outright (it is not sent again)."""
        self.counters.control_refused += 1

    def control_settled(self, topic: str) -> bool:
        """Whether no control message for `topic` waits or is unacknowledged."""
        return topic not in self._control_waiting and topic not in self._control_inflight.values()

    # --- group commits -------------------------------------------------------------------

    def request_commit(self) -> int:
        """Ask for a commit now; the number of the commit that will hold everything so far."""
        self._commit_requested = True
        return self._snapshots + 1

    def is_durable(self, snapshot: int) -> bool:
        """Whether commit number `snapshot` (from `request_commit`) is done."""
        return self._durable_snapshot >= snapshot

    def take_commit(self) -> tuple[CommitBatch, int]:
        """What the next commit writes (the batch, acknowledged deletes, dead letters, seq
        reservations) and its number; the queue holds none of it until `committed` or
        `commit_failed`."""
        self._commit_requested = False
        self._snapshots += 1
        batch = CommitBatch(
            list(self._pending.values()), self._acked_ids, self._dead, self._seqs.wanted()
        )
        self._pending = OrderedDict()
        self._acked_ids = set()
        self._dead = []
        return batch, self._snapshots

    def committed(
        self,
        snapshot: int,
        batch: CommitBatch,
        *,
        dropped: int = 0,
        dropped_ids: tuple[int, int] | None = None,
    ) -> None:
        """Commit `snapshot` of `batch` is durable; the spool then dropped its `dropped` oldest
        messages, ids `dropped_ids` (first, last), to stay within its size bound."""
        self._durable_snapshot = snapshot
        if not batch:
            return
        self._acked_markers.difference_update(batch.deletes)
        self.counters.commits += 1
        self._seqs.durable.update(batch.reservations)
        self._dead_count = min(self._dead_count + len(batch.dead), self._max_dead)
        ids = [m.id for m in batch.inserts] + [d.id for d in batch.dead]
        self._spool_max_id = max(self._spool_max_id, *ids) if ids else self._spool_max_id
        if dropped and dropped_ids is not None:
            # The spool dropped every message in the range but the session markers.
            first, last = dropped_ids
            already = {i for i in self._acked_ids if first <= i <= last} - self._acked_markers
            self._acked_ids -= already
            for mid, m in list(self._inflight.items()):
                if first <= m.id <= last and m.kind != SESSION_KIND:
                    del self._inflight[mid]
            self._outstanding -= dropped - len(already)
            self.counters.dropped_full += dropped - len(already)
            self._buffer.clear()

    def commit_failed(self, batch: CommitBatch) -> None:
        """The commit of `batch` failed (rolled back whole): keep all of it for the next one,
        except what was acknowledged or set aside meanwhile."""
        dead_ids = {d.id for d in self._dead}
        restored = OrderedDict(
            (m.id, m) for m in batch.inserts if m.id not in self._acked_ids and m.id not in dead_ids
        )
        unwritten = {m.id for m in batch.inserts}
        self._acked_ids -= unwritten
        self._acked_ids |= set(batch.deletes)
        self._dead = [
            dataclasses.replace(d, in_spool=d.in_spool and d.id not in unwritten)
            for d in [*batch.dead, *self._dead]
        ]
        restored.update(self._pending)
        self._pending = restored
