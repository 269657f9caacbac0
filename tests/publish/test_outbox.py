"""The outbox, the publisher's queue without IO: driven through its public methods alone."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.publish.outbox import (
    SESSION_KIND,
    CommitBatch,
    DeadLetter,
    Hold,
    Outbox,
    ReadSpool,
    SpoolMessage,
)

WINDOWS = {None: (3, 2), 1: (1, 1), 4: (3, 1)}
"""The (telegram, control) windows the shell gives the outbox per broker Receive Maximum."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to the link."""

    incarnation: int
    generation: int
    id: int
    topic: str
    seq: int
    payload: bytes


class Rig:
    """The outbox driven the way publisher.py drives it, against a spool and a link in memory.

    The link takes every message while up; its broker acknowledges (or refuses) what the test
    says, in any order. The spool is a dict; a commit is taken, then written or failed, and the
    network thread's refills may come in between, as they do while the real writer commits.
    """

    def __init__(self, *, max_pending: int = 10_000, max_dead: int = 10_000):
        self.max_pending, self.max_dead = max_pending, max_dead
        self.spool: dict[int, SpoolMessage] = {}
        self.dead: dict[int, DeadLetter] = {}
        self.reserved = {"v5": 0, "v4": 0}  # as on a spool that saw these variants before
        self.up = False  # the link's own word, ahead of the events the writer applies
        self.generation = 0
        self.events: list[int | None] = []  # a generation per connect, None per disconnect
        self.wire: list[tuple[int, int, SpoolMessage | None]] = []  # generation, mid, message
        self.mids = itertools.count(1)
        self.taken: tuple[CommitBatch, int] | None = None  # a commit under way
        self.deliveries: list[Delivery] = []
        self.hurried = 0  # times a send half filled the window
        self.expected: set[tuple[str, int]] = set()  # (topic, seq) of every message enqueued
        self.answered: set[tuple[str, int]] = set()  # ... that the broker acknowledged or refused
        self.lost: set[tuple[str, int]] = set()  # ... lost with a process (never committed)
        self.receive_maximum: int | None = None
        self.incarnation = 0
        self.markers = 0
        self.outbox = self._restore()

    def _restore(self) -> Outbox:
        """A fresh outbox on what the spool holds (a start or a restart)."""
        outbox = Outbox(
            window=3,
            control_window=2,
            seq_block=4,
            max_pending=self.max_pending,
            max_dead=self.max_dead,
        )
        fresh = outbox.restore(
            reserved=self.reserved,
            max_id=max([*self.spool, *self.dead], default=0),
            unacked=len(self.spool),
            first_id=min(self.spool, default=None),
            dead_letters=len(self.dead),
        )
        self.reserved.update(fresh)
        self.acked: set[int] = set()  # ids (of this process) the broker acknowledged
        self.refused: set[int] = set()  # ... or refused
        self.last_sent = 0
        return outbox

    # --- the reader thread ---------------------------------------------------------------

    def submit(self, variant: str = "v5", kinds: tuple[str, ...] = ("telegram", "raw")) -> int:
        """One reception: a seq and its messages, each sent at once when next in line."""
        outbox = self.outbox
        seq = outbox.take_seq(variant)
        for kind in kinds:
            topic = f"p1/rig/slot/acme/{variant}/{kind}"
            payload = f"{self.incarnation}:{variant}:{seq}:{kind}".encode()
            step = outbox.enqueue(variant, seq, kind, topic, payload, 0, connected=self.up)
            self.expected.add((topic, seq))
            if isinstance(step, SpoolMessage):
                self._send(step)
        return seq

    def marker(self, holder: str = "acme") -> None:
        """A session marker, as the publisher enqueues one (no variant, no seq)."""
        self.markers += 1
        topic = f"p1/rig/slot/{holder}/session"
        payload = f"{self.incarnation}:marker:{self.markers}".encode()
        step = self.outbox.enqueue("", 0, SESSION_KIND, topic, payload, 0, connected=self.up)
        assert step is Hold.WAKE_WRITER, "a marker never goes before its commit"
        self.expected.add((topic, -self.markers))

    def _send(self, msg: SpoolMessage) -> None:
        """Hand a message to the link, as the publisher does."""
        if msg.kind == SESSION_KIND:
            assert self.spool.get(msg.id) == msg, "a session marker went out before its commit"
        assert msg.seq <= self.reserved.get(msg.variant, 0), "a seq not durably reserved went out"
        assert msg.id > self.last_sent, "ids out of order within one connection"
        assert msg.id not in self.acked, "an acknowledged message went again"
        assert msg.id not in self.refused, "a refused message went again"
        self.last_sent = msg.id
        mid = next(self.mids)
        self.hurried += self.outbox.sent(msg, mid)
        self.wire.append((self.generation, mid, msg))
        seq = -int(msg.payload.rsplit(b":", 1)[1]) if msg.kind == SESSION_KIND else msg.seq
        self.deliveries.append(
            Delivery(self.incarnation, self.generation, msg.id, msg.topic, seq, msg.payload)
        )

    def refill(self, *, writer: bool) -> list[Hold]:
        """Fill the window in id order; the writer also reads the spool. What held it up."""
        holds = []
        while True:
            step = self.outbox.next_message(connected=self.up, writer=writer)
            if isinstance(step, SpoolMessage):
                self._send(step)
            elif isinstance(step, ReadSpool):
                assert writer, "only the writer is asked to read the spool"
                rows = [self.spool[i] for i in sorted(self.spool) if i >= step.first_id][:2]
                self.outbox.spool_read(step.first_id, rows)
            else:
                holds.append(step)
                return holds

    def pump_control(self) -> None:
        """Send waiting control messages while the control window has room."""
        while (item := self.outbox.next_control(connected=self.up)) is not None:
            mid = next(self.mids)
            self.outbox.control_sent(item[0], item[1], mid)
            self.wire.append((self.generation, mid, None))

    # --- the link and its broker ---------------------------------------------------------

    def answer(self, index: int, *, ok: bool = True) -> None:
        """The broker answers one message on the wire (any of them); the network thread
        applies it and refills from memory."""
        generation, mid, msg = self.wire.pop(index % len(self.wire))
        counters = self.outbox.counters
        acked, refused = counters.acked, counters.refused
        if ok:
            self.outbox.ack(generation, mid)
        else:
            self.outbox.refuse(generation, mid, "not authorized", 0x87, 0)
        if msg is not None and counters.acked + counters.refused > acked + refused:
            (self.acked if ok else self.refused).add(msg.id)
            seq = msg.seq
            if msg.kind == SESSION_KIND:
                seq = -int(msg.payload.rsplit(b":", 1)[1])
            self.answered.add((msg.topic, seq))
        self.pump_control()
        self.refill(writer=False)

    def drop(self) -> None:
        """The connection ends (the link knows at once, the writer at its next tick)."""
        if self.up:
            self.up = False
            self.events.append(None)

    def connect(self, receive_maximum: int | None = None) -> None:
        """The link connects again; the writer learns it at its next tick."""
        if not self.up:
            self.up = True
            self.generation += 1
            self.events.append(self.generation)
            self.receive_maximum = receive_maximum
            self.last_sent = 0

    # --- the writer thread ---------------------------------------------------------------

    def tick(self) -> None:
        """Apply the link's events, then refill from memory and the spool."""
        for event in self.events:
            if event is None:
                self.outbox.disconnect()
                continue
            self.outbox.connect(
                event,
                windows=WINDOWS[self.receive_maximum],
                receive_maximum=self.receive_maximum,
                status=("p1/rig/status", b"online"),
            )
            self.last_sent = 0
            self.pump_control()
        self.events.clear()
        self.refill(writer=True)

    def take_commit(self) -> CommitBatch:
        """The writer takes the next batch (it is written by `finish_commit`)."""
        batch, snapshot = self.outbox.take_commit()
        assert set(batch.deletes) <= self.acked | self.refused, "deletes a message not answered"
        assert {d.id for d in batch.dead if d.in_spool} <= self.refused
        self.taken = (batch, snapshot)
        return batch

    def finish_commit(self, *, ok: bool = True) -> None:
        """The commit under way is written whole, or fails whole."""
        assert self.taken is not None
        (batch, snapshot), self.taken = self.taken, None
        if not ok:
            self.outbox.commit_failed(batch)
            return
        for m in batch.inserts:
            self.spool[m.id] = m
        for i in batch.deletes:
            self.spool.pop(i, None)
        for d in batch.dead:
            self.dead[d.id] = d
            if d.in_spool:
                self.spool.pop(d.id, None)
        for variant, reserve in batch.reservations.items():
            self.reserved[variant] = max(self.reserved.get(variant, 0), reserve)
        self.outbox.committed(snapshot, batch)
        if batch:
            self.refill(writer=True)

    def commit(self) -> None:
        """One whole group commit."""
        self.take_commit()
        self.finish_commit()

    def restart(self) -> None:
        """kill -9 and start again on the spool: what was not committed is gone."""
        spooled = {
            (m.topic, -int(m.payload.rsplit(b":", 1)[1]) if m.kind == SESSION_KIND else m.seq)
            for m in self.spool.values()
        }
        self.lost |= self.expected - self.answered - spooled
        self.taken = None
        self.up = False
        self.events.clear()
        self.wire.clear()
        self.incarnation += 1
        self.outbox = self._restore()

    def drain(self) -> None:
        """Connect and run until everything is acknowledged and committed."""
        if self.taken is not None:
            self.finish_commit()
        self.connect()
        for _ in range(500):
            self.tick()
            while self.wire:
                self.answer(0)
            self.commit()
            if not (self.outbox.outstanding or self.outbox.control_waiting or self.wire):
                return
        raise AssertionError(f"no progress: {self.outbox.outstanding} outstanding")


def connected_rig(**kw: int) -> Rig:
    """A rig whose link is up, known to be up, and its status acknowledged."""
    rig = Rig(**kw)
    rig.connect()
    rig.tick()
    rig.answer(0)
    return rig


def test_a_seq_goes_out_only_once_durably_reserved() -> None:
    """A new variant, nothing reserved: its first telegram asks for a commit, goes after it."""
    rig = connected_rig()
    rig.submit("v9")
    assert rig.deliveries == [] and rig.outbox.commit_requested
    rig.commit()
    assert [(d.seq, d.topic.rsplit("/", 1)[1]) for d in rig.deliveries] == [
        (1, "telegram"),
        (1, "raw"),
    ]
    while rig.wire:
        rig.answer(0)
    rig.submit("v9")
    assert len(rig.deliveries) == 4  # reserved ahead: at once now


def test_a_commit_asked_for_by_another_lets_no_unreserved_seq_out() -> None:
    """A commit already requested (commit_now): a new variant's first telegram still waits."""
    rig = connected_rig()
    target = rig.outbox.request_commit()
    rig.submit("v9")
    assert rig.deliveries == []
    rig.commit()
    assert rig.outbox.is_durable(target) and len(rig.deliveries) == 2


def test_refill_outside_the_writer_never_steps_over_a_gap() -> None:
    """Ids missing from memory may be in a commit: only the writer, which commits, skips them."""
    rig = Rig()
    rig.submit("v9")  # ids 1, 2: not connected, and v9's seqs not reserved yet
    rig.connect()
    rig.tick()
    rig.take_commit()  # 1 and 2 out of the batch, not yet in the spool
    rig.submit("v9")  # ids 3, 4
    assert rig.refill(writer=False) == [Hold.WAKE_WRITER]  # told to wake the writer instead
    assert rig.deliveries == []
    rig.finish_commit()  # the writer, done, reads 1 and 2 back from the spool
    assert [d.id for d in rig.deliveries] == [1, 2, 3]  # (a window of 3)


def test_a_failed_commit_keeps_its_batch_for_the_next() -> None:
    """A commit that fails writes nothing: its messages and deletes go in the next one, but
    not what was acknowledged or refused meanwhile."""
    rig = connected_rig()
    rig.submit(kinds=("telegram",))
    rig.commit()  # id 1 in the spool
    rig.submit()
    rig.submit(kinds=("invalid",))
    rig.answer(0)  # id 1 acknowledged: its row is to be deleted
    rig.answer(0)  # id 2 acknowledged before it was ever committed: never written
    batch = rig.take_commit()
    assert [m.id for m in batch.inserts] == [3, 4] and set(batch.deletes) == {1}
    rig.answer(0)  # id 3 acknowledged while its commit is under way
    rig.answer(0, ok=False)  # id 4 refused meanwhile
    rig.finish_commit(ok=False)
    batch = rig.take_commit()
    assert list(batch.inserts) == [] and set(batch.deletes) == {1}
    assert [(d.id, d.in_spool) for d in batch.dead] == [(4, False)]  # its row was never written
    rig.finish_commit()
    assert rig.spool == {} and rig.outbox.outstanding == 0


def test_a_refused_message_is_not_read_back_before_its_dead_letter_is_committed() -> None:
    """Refused while in the spool, its row not yet deleted: a reconnect does not resend it."""
    rig = connected_rig()
    rig.submit(kinds=("telegram",))
    rig.submit(kinds=("telegram",))
    rig.commit()
    rig.answer(1, ok=False)  # id 2; 1 stays unacknowledged
    rig.drop()
    rig.connect()
    rig.tick()
    assert [d.id for d in rig.deliveries] == [1, 2, 1]


def test_a_failed_commit_loses_no_message_never_sent() -> None:
    """The link down, a commit fails: its messages wait in memory for the next commit."""
    rig = connected_rig()
    rig.drop()
    rig.submit()
    rig.take_commit()
    rig.finish_commit(ok=False)
    assert rig.outbox.pending == 2 and rig.spool == {}
    rig.commit()
    assert sorted(rig.spool) == [1, 2]
    rig.drain()
    assert [d.id for d in rig.deliveries] == [1, 2]


def test_a_refused_message_becomes_a_dead_letter() -> None:
    """The broker's refusal sets the message aside, out of the queue, into the dead letters."""
    rig = connected_rig()
    rig.commit()
    rig.submit(kinds=("telegram",))
    rig.commit()  # in the spool now
    rig.answer(0, ok=False)
    batch = rig.take_commit()
    assert [(d.id, d.reason, d.reason_code, d.in_spool) for d in batch.dead] == [
        (1, "broker refused: not authorized", 0x87, True)
    ]
    rig.finish_commit()
    assert rig.spool == {} and rig.outbox.dead_letters == 1 and rig.outbox.outstanding == 0


def test_dead_letters_are_bounded_and_still_leave_the_spool() -> None:
    """Over max_dead, the oldest letters are not kept, but their spool rows are deleted."""
    rig = connected_rig(max_dead=1)
    rig.commit()
    rig.submit(kinds=("telegram",))
    rig.submit(kinds=("telegram",))
    rig.commit()
    rig.answer(0, ok=False)
    rig.answer(0, ok=False)
    batch = rig.take_commit()
    assert [d.id for d in batch.dead] == [2] and set(batch.deletes) == {1}
    rig.finish_commit()
    assert rig.spool == {}


def test_rejected_receptions_take_an_id_and_hold_nothing_up() -> None:
    """A reception failing a local check is a dead letter with an id of its own, never sent."""
    rig = connected_rig()
    rig.commit()
    rig.outbox.reject("v5", "telegram", b"raw", "encode: bad", 7)
    rig.submit()
    assert [d.id for d in rig.deliveries] == [2, 3]
    (letter,) = rig.take_commit().dead
    assert (letter.id, letter.seq, letter.in_spool, letter.at_ns) == (1, None, False, 7)


def test_an_id_that_ends_the_spool_as_a_dead_letter_holds_nothing_up() -> None:
    """The spool's last id is a dead letter's: the writer reads nothing there and goes on."""
    rig = connected_rig()
    rig.drop()
    rig.submit(kinds=("telegram",))  # id 1, waiting: the link is down
    rig.outbox.reject("v5", "telegram", b"raw", "encode: bad", 0)  # id 2
    rig.commit()
    rig.submit(kinds=("telegram",))  # id 3, in the batch
    rig.connect()
    rig.tick()
    assert [d.id for d in rig.deliveries] == [1, 3]


def test_the_batch_bound_drops_its_oldest() -> None:
    """Commits failing, the batch over max_pending: its oldest message goes, and is counted."""
    rig = Rig(max_pending=3)
    for _ in range(2):
        rig.submit()
    assert rig.outbox.pending == 3 and rig.outbox.outstanding == 3
    assert rig.outbox.counters.dropped_full == 1
    rig.drain()
    assert [d.id for d in rig.deliveries] == [2, 3, 4]


def test_the_spools_size_bound_forgets_what_it_dropped() -> None:
    """The spool dropped its oldest rows: they are no longer outstanding, nor sent again."""
    rig = connected_rig()
    rig.commit()
    rig.drop()
    for _ in range(3):
        rig.submit()
    batch, snapshot = rig.outbox.take_commit()
    rig.outbox.committed(snapshot, batch, dropped=4, dropped_ids=(1, 4))
    for m in batch.inserts[4:]:
        rig.spool[m.id] = m
    assert rig.outbox.outstanding == 2 and rig.outbox.counters.dropped_full == 4
    rig.connect()
    rig.tick()
    assert [d.id for d in rig.deliveries] == [5, 6]


def test_a_reconnect_resends_everything_unacknowledged_in_order() -> None:
    """After a reconnect the oldest unacknowledged goes first; acknowledged ones not again."""
    rig = connected_rig()
    rig.submit()
    rig.submit()  # ids 1..4; window 3: 4 waits
    rig.commit()
    rig.answer(1)  # id 2 acknowledged: its row is deleted at the next commit, not yet
    rig.drop()
    rig.connect()
    rig.tick()
    # 4 waited for the writer to read it back from the spool, then for the new connection.
    assert [d.id for d in rig.deliveries] == [1, 2, 3, 1, 3, 4]
    assert [d.generation for d in rig.deliveries] == [1, 1, 1, 2, 2, 2]


def test_control_messages_wait_for_room_newest_payload_per_topic() -> None:
    """A full control window: more wait, the newest payload per topic, `first` ahead."""
    rig = Rig()
    rig.connect()
    rig.tick()  # the status went out: one of the two control slots in use
    outbox = rig.outbox
    assert outbox.control_inflight == 1
    assert outbox.put_control("h/a", b"1") is True
    rig.pump_control()
    assert outbox.put_control("h/b", b"1") is True
    assert outbox.put_control("h/b", b"2") is False
    assert outbox.put_control("p1/rig/status", b"offline", first=True) is False
    rig.pump_control()
    assert (outbox.control_inflight, outbox.control_waiting) == (2, 2)
    assert not outbox.control_settled("h/b")
    assert outbox.next_control(connected=True) is None
    rig.answer(0)
    assert outbox.control_inflight == 2 and outbox.control_waiting == 1  # the status went first
    rig.answer(0)
    rig.answer(0)
    rig.answer(0)
    assert outbox.control_settled("h/b") and outbox.control_settled("p1/rig/status")


def test_the_retained_state_goes_again_on_every_connect() -> None:
    """On connect: the status first, then the catalogue, removals still waiting, the health,
    the holders' schedules and the calendar."""
    rig = Rig()
    outbox = rig.outbox
    outbox.retain_catalogue("p1/rig/variants", b"cat")
    assert outbox.retain_health("p1/rig/health/v5", b"up")
    assert not outbox.retain_health("p1/rig/health/v5", b"up")  # unchanged: nothing to send
    outbox.put_control("p1/rig/health/gone", b"")
    outbox.put_control("p1/rig/health/v5", b"up")
    outbox.retain_health("p1/rig/health/v4", b"up")
    outbox.forget_health("p1/rig/health/v4")
    assert outbox.retain_state("p1/rig/slot/acme/schedule", b"old")
    assert outbox.retain_state("p1/rig/slot/acme/schedule", b"new")
    assert not outbox.retain_state("p1/rig/slot/acme/schedule", b"new")  # unchanged
    outbox.retain_state("p1/rig/calendar", b"busy")
    outbox.connect(1, windows=(3, 10), receive_maximum=None, status=("p1/rig/status", b"on"))
    sent = []
    while (item := outbox.next_control(connected=True)) is not None:
        sent.append(item)
    assert sent == [
        ("p1/rig/status", b"on"),
        ("p1/rig/variants", b"cat"),
        ("p1/rig/health/gone", b""),
        ("p1/rig/health/v5", b"up"),
        ("p1/rig/slot/acme/schedule", b"new"),
        ("p1/rig/calendar", b"busy"),
    ]


def test_a_control_message_the_link_did_not_take_waits_first() -> None:
    """The connection just went under a publish: the message waits again, ahead of the rest."""
    outbox = Outbox(window=3, control_window=1)
    outbox.connect(1, windows=(3, 1), receive_maximum=None, status=("s", b"on"))
    outbox.put_control("h/a", b"1")
    assert outbox.next_control(connected=True) == ("s", b"on")
    outbox.control_sent("s", b"on", None)
    assert outbox.control_waiting == 2 and outbox.control_inflight == 0
    assert outbox.next_control(connected=True) == ("s", b"on")
    outbox.control_failed()
    assert outbox.counters.control_refused == 1


def test_a_receive_maximum_of_one_is_shared_by_both_kinds() -> None:
    """Receive Maximum 1: one message out at a time, telegram or control."""
    rig = Rig()
    rig.connect(receive_maximum=1)
    rig.tick()  # the status takes the one slot
    rig.submit()
    assert rig.deliveries == [] and rig.outbox.receive_maximum == 1
    rig.answer(0)  # the status acknowledged: the telegram goes
    assert len(rig.deliveries) == 1
    rig.outbox.put_control("p1/rig/health/v5", b"up")
    assert rig.outbox.next_control(connected=True) is None  # the one slot is the telegram's


def test_acks_of_an_earlier_connection_are_strays() -> None:
    """A PUBACK from before the reconnect acknowledges nothing: the message goes again."""
    rig = connected_rig()
    rig.commit()
    rig.submit(kinds=("telegram",))
    stale = rig.wire[-1]
    rig.drop()
    rig.connect()
    rig.tick()
    rig.wire.insert(0, stale)
    rig.answer(0)
    assert rig.outbox.counters.stray_acks == 1 and rig.outbox.outstanding == 1
    assert [d.generation for d in rig.deliveries] == [1, 2]


def test_the_link_may_linger_only_while_nothing_waits() -> None:
    """PUBACKs are gathered only with nothing waiting and both windows under half full."""
    rig = connected_rig()
    assert rig.outbox.may_linger()
    rig.submit()  # 2 of a window of 3 out: half full
    assert not rig.outbox.may_linger() and rig.hurried == 1
    rig.answer(0)
    assert rig.outbox.may_linger()
    rig.drop()
    rig.submit()  # waits: the link is down
    assert not rig.outbox.may_linger()


def test_commits_are_numbered_for_those_who_wait_on_them() -> None:
    """request_commit names the commit that holds everything so far; is_durable says when."""
    rig = Rig()
    target = rig.outbox.request_commit()
    assert rig.outbox.commit_requested and not rig.outbox.is_durable(target)
    rig.commit()
    assert rig.outbox.is_durable(target) and not rig.outbox.commit_requested


def test_a_restart_resends_the_backlog_and_never_reuses_a_seq() -> None:
    """Restarted on its spool, the outbox sends the backlog first, then new seqs above it."""
    rig = connected_rig()
    rig.commit()
    rig.submit()
    rig.commit()
    rig.submit()  # never committed: lost with the process
    rig.restart()
    rig.connect()
    rig.tick()
    seq = rig.submit()
    rig.drain()
    mine = [d.seq for d in rig.deliveries if d.incarnation == 1]
    assert mine == [1, 1, seq, seq] and seq > 2


class OutboxMachine(RuleBasedStateMachine):
    """Any interleaving of submits, acks, refusals, drops, reconnects, commits (failing or
    not) and restarts: the outbox keeps each topic in order, deletes only what the broker
    acknowledged, publishes only reserved seqs, and loses nothing it committed."""

    def __init__(self) -> None:
        super().__init__()
        self.rig = connected_rig()

    @rule(variant=st.sampled_from(["v5", "v5", "v4", "v9"]), invalid=st.booleans())
    def submit(self, variant: str, invalid: bool) -> None:
        """A reception arrives."""
        self.rig.submit(variant, ("invalid",) if invalid else ("telegram", "raw"))

    @precondition(lambda self: self.rig.wire)
    @rule(index=st.integers(0, 20), ok=st.booleans(), ok_more=st.booleans())
    def answer(self, index: int, ok: bool, ok_more: bool) -> None:
        """The broker acknowledges (mostly) or refuses one message on the wire."""
        self.rig.answer(index, ok=ok or ok_more)

    @precondition(lambda self: self.rig.wire)
    @rule()
    def answer_all(self) -> None:
        """The broker catches up: it acknowledges everything on the wire."""
        while self.rig.wire:
            self.rig.answer(0)

    @precondition(lambda self: self.rig.taken is None)
    @rule()
    def tick(self) -> None:
        """The writer wakes (it does not while it commits)."""
        self.rig.tick()

    @precondition(lambda self: self.rig.taken is None)
    @rule()
    def take_commit(self) -> None:
        """The writer takes a batch to commit."""
        self.rig.take_commit()

    @precondition(lambda self: self.rig.taken is not None)
    @rule(ok=st.booleans(), ok_more=st.booleans())
    def finish_commit(self, ok: bool, ok_more: bool) -> None:
        """The commit is written (mostly), or fails whole."""
        self.rig.finish_commit(ok=ok or ok_more)

    @rule(
        trouble=st.sampled_from(["reconnect", "reconnect", "drop", "restart"]),
        receive_maximum=st.sampled_from([None, None, 1, 4]),
    )
    def trouble(self, trouble: str, receive_maximum: int | None) -> None:
        """The connection drops (and mostly comes back), or the process is killed and started
        again (what was not committed nor answered is lost) and connects."""
        if trouble == "restart":
            self.rig.restart()
        self.rig.drop()
        if trouble != "drop":
            self.rig.connect(receive_maximum)

    @rule()
    def marker(self) -> None:
        """A session edge: its marker joins the queue."""
        self.rig.marker()

    @rule(what=st.sampled_from(["commit now", "reject", "health"]))
    def other(self, what: str) -> None:
        """Someone asks for a commit now; a reception fails a local check; a port's health
        changes."""
        rig = self.rig
        if what == "commit now":
            rig.outbox.request_commit()
        elif what == "reject":
            rig.outbox.reject("v5", "telegram", b"raw", "encode: bad", 0)
        else:
            n = len(rig.deliveries)
            rig.outbox.put_control(f"p1/rig/health/p{n % 3}", str(n).encode())
            rig.pump_control()

    @invariant()
    def windows_hold(self) -> None:
        """Never more out than the windows and the broker's Receive Maximum allow."""
        outbox = self.rig.outbox
        window, control = WINDOWS[outbox.receive_maximum]
        assert outbox.inflight <= window and outbox.control_inflight <= control
        if outbox.receive_maximum:
            assert outbox.inflight + outbox.control_inflight <= outbox.receive_maximum

    @invariant()
    def each_topic_in_order(self) -> None:
        """Per topic, the first arrivals of its seqs are in increasing order, and a seq that
        arrives again carries the very same payload."""
        first: dict[tuple[str, int], bytes] = {}
        last: dict[str, int] = {}
        for d in self.rig.deliveries:
            key = (d.topic, d.seq)
            if key in first:
                assert first[key] == d.payload, f"{key} sent again with another payload"
                continue
            first[key] = d.payload
            if d.seq < 0:  # a session marker: numbered down, in order of their creation
                assert d.seq < last.get(d.topic, 0), f"marker {key} after {last[d.topic]}"
            else:
                assert d.seq > last.get(d.topic, 0), f"{key} after seq {last[d.topic]}"
            last[d.topic] = d.seq

    def teardown(self) -> None:
        """Once connected long enough, everything not lost in a crash arrives, and the spool
        is empty."""
        rig = self.rig
        rig.drain()
        assert rig.spool == {} and rig.outbox.outstanding == 0
        self.each_topic_in_order()
        arrived = {(d.topic, d.seq) for d in rig.deliveries}
        assert rig.expected - rig.lost <= arrived


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=400, stateful_step_count=60, deadline=None)


@pytest.mark.parametrize("writer", [False, True])
def test_nothing_goes_out_before_the_first_connect(writer: bool) -> None:
    """Messages wait while no connection was ever made, whoever asks."""
    rig = Rig()
    rig.commit()
    rig.submit()
    assert rig.refill(writer=writer) == [Hold.IDLE] and rig.deliveries == []


def test_a_session_marker_goes_only_once_committed_and_what_follows_waits() -> None:
    """A marker asks for a commit and goes after it; the messages behind it wait in order."""
    rig = connected_rig()
    rig.commit()
    rig.submit()  # ids 1, 2: out at once
    rig.marker()  # id 3
    rig.submit()  # ids 4, 5: behind the marker
    assert [d.id for d in rig.deliveries] == [1, 2] and rig.outbox.commit_requested
    assert rig.refill(writer=False) == [Hold.IDLE]  # the commit is asked for already
    while rig.wire:
        rig.answer(0)
    assert [d.id for d in rig.deliveries] == [1, 2]
    rig.commit()
    assert [d.id for d in rig.deliveries] == [1, 2, 3, 4, 5]


def test_the_batch_bound_never_drops_a_session_marker() -> None:
    """Commits failing, the batch over its bound: the oldest message that is not a marker."""
    rig = Rig(max_pending=3)
    rig.marker()  # id 1
    rig.submit()  # ids 2, 3
    rig.submit()  # ids 4, 5: 2 and 3 dropped
    assert rig.outbox.pending == 3 and rig.outbox.counters.dropped_full == 2
    rig.drain()
    assert [d.id for d in rig.deliveries] == [1, 4, 5]


def test_the_spools_drop_of_a_range_spares_its_markers() -> None:
    """The spool drops a range of ids but the markers in it: a marker acknowledged meanwhile
    counts as acknowledged, not as dropped, and nothing in flight of the range is waited for."""
    rig = connected_rig()
    rig.commit()
    rig.submit(kinds=("telegram",))  # id 1, out at once
    rig.marker()  # id 2
    rig.submit(kinds=("telegram",))  # id 3, behind the marker
    rig.commit()  # 2 and 3 go now: 1, 2, 3 in flight
    rig.submit(kinds=("telegram",))  # id 4, waits for room
    batch, snapshot = rig.outbox.take_commit()
    rig.answer(1)  # the marker acknowledged while the commit is under way
    for m in batch.inserts:
        rig.spool[m.id] = m
    rig.spool.pop(1)
    rig.spool.pop(3)  # dropped by the size bound: 1 and 3, not the marker between them
    rig.outbox.committed(snapshot, batch, dropped=2, dropped_ids=(1, 3))
    assert rig.outbox.outstanding == 1 and rig.outbox.counters.dropped_full == 2
    assert rig.outbox.inflight == 0
    rig.drain()
    assert [d.id for d in rig.deliveries] == [1, 2, 3, 4]
