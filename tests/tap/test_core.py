"""The tap's pure core through its public methods: routing, dedupe and order, pacing, buffers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tap.core import (
    INVALID,
    RAW,
    REMEMBERED_SEQS,
    Delivery,
    OutBuffer,
    Pacer,
    TapCore,
)

BASE = "p1/rig-a/slot/acme"


def core(**kw: object) -> TapCore:
    """A core for rig-a, holder acme, variants v1 and v2."""
    args: dict[str, object] = {"rig": "rig-a", "holder": "acme", "variants": ["v1", "v2"]}
    args.update(kw)
    return TapCore(**args)  # type: ignore[arg-type]


def raw(c: TapCore, variant: str, seq: int | None, data: bytes, at: int = 0) -> Delivery | None:
    """Feed a raw message with the user properties the gateway sets."""
    props = [] if seq is None else [("seq", str(seq)), ("variant", variant)]
    return c.feed(f"{BASE}/{variant}/raw", data, props, at)


def invalid(
    c: TapCore, variant: str, seq: int, data: bytes, *, props: bool = True
) -> Delivery | None:
    """Feed an invalid message as the gateway builds it (raw as latin-1 code points)."""
    payload = json.dumps(
        {
            "rig": "rig-a",
            "variant": variant,
            "seq": seq,
            "reason": "crc mismatch",
            "raw_encoding": "latin-1",
            "raw": data.decode("latin-1"),
        }
    ).encode()
    user = [("seq", str(seq)), ("variant", variant)] if props else []
    return c.feed(f"{BASE}/{variant}/invalid", payload, user, 0)


def test_topics_are_each_variants_raw_and_invalid_or_raw_alone_when_valid_only() -> None:
    """The tap subscribes to raw and invalid of each variant; valid-only leaves invalid out."""
    assert core().topics() == [
        f"{BASE}/v1/raw",
        f"{BASE}/v1/invalid",
        f"{BASE}/v2/raw",
        f"{BASE}/v2/invalid",
    ]
    assert core(valid_only=True).topics() == [f"{BASE}/v1/raw", f"{BASE}/v2/raw"]


def test_bad_identifiers_and_no_variant_are_refused() -> None:
    """A rig, holder or variant that could not be a topic level is refused, as is no variant."""
    with pytest.raises(ValueError):
        core(rig="Rig A")
    with pytest.raises(ValueError):
        core(holder="acme/#")
    with pytest.raises(ValueError):
        core(variants=["v1", "+"])
    with pytest.raises(ValueError):
        core(variants=[])


def test_a_raw_message_is_written_with_its_exact_bytes_seq_and_receipt_time() -> None:
    """The raw payload comes out unchanged, with the seq of its user property."""
    c = core()
    frame = b"/FLU5\\253769484_A\r\n\r\n1-0:1.8.1(000123.456*kWh)\r\n!ABCD\r\n"
    out = raw(c, "v1", 7, frame, at=123)
    assert out == Delivery("v1", 7, RAW, frame, 123)
    assert c.last_seq("v1") == 7 and c.last_seq("v2") is None


def test_duplicates_and_late_messages_are_dropped_and_counted() -> None:
    """A seq already written is a duplicate; one older than the last written is late."""
    c = core()
    assert raw(c, "v1", 5, b"/5!") is not None
    assert raw(c, "v1", 8, b"/8!") is not None
    assert raw(c, "v1", 8, b"/8!") is None
    assert raw(c, "v1", 5, b"/5!") is None
    assert raw(c, "v1", 6, b"/6!") is None
    assert raw(c, "v2", 5, b"/5!") is not None  # each variant has its own seqs
    counters = c.counters("v1")
    assert (counters.written, counters.duplicates, counters.late) == (2, 2, 1)
    assert c.counters("v2").written == 1


def test_invalid_frames_come_back_as_their_exact_bytes() -> None:
    """An invalid message's latin-1 `raw` gives the frame's bytes, high bytes included."""
    c = core()
    frame = bytes(range(256))
    out = invalid(c, "v1", 3, frame)
    assert out is not None and out.data == frame and out.kind == INVALID and out.seq == 3
    out = invalid(c, "v1", 4, b"/no props!\r\n", props=False)  # the seq from the JSON then
    assert out is not None and out.seq == 4
    assert c.counters("v1").invalid == 2


def test_invalid_and_raw_share_one_seq_line_per_variant() -> None:
    """A variant's raw and invalid messages are deduplicated and ordered together."""
    c = core()
    assert raw(c, "v1", 1, b"/1!") is not None
    assert invalid(c, "v1", 2, b"/2?") is not None
    assert invalid(c, "v1", 2, b"/2?") is None
    assert raw(c, "v1", 1, b"/1!") is None
    assert raw(c, "v1", 3, b"/3!") is not None


def test_valid_only_skips_invalid_frames() -> None:
    """With valid_only an invalid message (from an old session's subscription) is skipped."""
    c = core(valid_only=True)
    assert invalid(c, "v1", 1, b"/bad") is None
    assert c.counters("v1").skipped_invalid == 1
    assert raw(c, "v1", 2, b"/ok") is not None


def test_unknown_topics_unsequenced_and_malformed_messages() -> None:
    """Foreign topics are ignored; no seq is written as it comes; unreadable ones are counted."""
    c = core()
    assert c.feed("p1/rig-a/slot/beta/v1/raw", b"/x", [("seq", "1")], 0) is None
    assert c.feed(f"{BASE}/v3/raw", b"/x", [("seq", "1")], 0) is None
    assert c.feed(f"{BASE}/v1/telegram", b"{}", [("seq", "1")], 0) is None
    assert c.foreign == 3
    assert raw(c, "v1", None, b"/a") is not None
    assert raw(c, "v1", None, b"/a") is not None  # a gateway on MQTT 3.1.1: no seq to go by
    assert c.feed(f"{BASE}/v1/raw", b"/x", [("seq", "seven")], 0) is None
    assert c.feed(f"{BASE}/v1/invalid", b"not json", [("seq", "9")], 0) is None
    assert c.feed(f"{BASE}/v1/invalid", b'{"seq": 9}', [("seq", "9")], 0) is None
    counters = c.counters("v1")
    assert (counters.unsequenced, counters.malformed, counters.written) == (2, 3, 2)
    assert c.counters("v1").as_dict()["malformed"] == 3


def test_a_duplicate_older_than_the_remembered_window_counts_as_late() -> None:
    """Only the last REMEMBERED_SEQS seqs are told apart as duplicates; both are dropped."""
    c = core()
    for seq in range(1, REMEMBERED_SEQS + 3):
        raw(c, "v1", seq, b"/")
    assert raw(c, "v1", 1, b"/") is None
    assert raw(c, "v1", REMEMBERED_SEQS, b"/") is None
    assert (c.counters("v1").late, c.counters("v1").duplicates) == (1, 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["v1", "v2"]), st.integers(1, 40), st.booleans()),
        max_size=120,
    )
)
def test_any_stream_comes_out_once_each_in_increasing_order(
    stream: list[tuple[str, int, bool]],
) -> None:
    """Whatever arrives, each variant's written seqs strictly increase; each is the max so far."""
    c = core()
    written: dict[str, list[int]] = {"v1": [], "v2": []}
    high: dict[str, int] = {}
    for variant, seq, is_raw in stream:
        out = raw(c, variant, seq, b"/") if is_raw else invalid(c, variant, seq, b"/")
        expect = seq > high.get(variant, 0)
        assert (out is not None) == expect
        if out is not None:
            assert out.seq is not None
            written[variant].append(out.seq)
            high[variant] = seq
    for seqs in written.values():
        assert seqs == sorted(set(seqs))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=30, unique=True), st.data())
def test_redeliveries_of_any_suffix_write_every_message_exactly_once(
    seqs: list[int], data: st.DataObject
) -> None:
    """The gateway's order with resent stretches (an outage's redeliveries) comes out whole."""
    order = sorted(seqs)
    stream: list[int] = []
    position = 0
    while position < len(order):
        step = data.draw(st.integers(1, len(order) - position))
        stream += order[position : position + step]
        position += step
        back = data.draw(st.integers(0, position))
        stream += order[position - back : position]  # resent: the broker saw no PUBACK
    c = core()
    out = [d.seq for s in stream if (d := raw(c, "v1", s, b"/%d" % s)) is not None]
    assert out == order
    assert c.counters("v1").duplicates == len(stream) - len(order)


# --- pacing ---------------------------------------------------------------------------------


def delivery(data: bytes, at: int = 0) -> Delivery:
    """A raw delivery of `data`."""
    return Delivery("v1", 1, RAW, data, at)


def test_a_paced_frame_ends_after_its_wire_time_in_pieces() -> None:
    """At 115200 baud a frame's last byte is due len/11520 s after it started; pieces join up."""
    pacer = Pacer.for_baud(115200)
    frame = bytes(range(256)) * 4
    assert pacer.push(delivery(frame), 1_000)
    assert pacer.next_due() is not None
    chunks = pacer.pop_due(10**12)
    assert b"".join(c.data for c in chunks) == frame
    assert chunks[0].first and chunks[-1].last and not any(c.first for c in chunks[1:])
    assert chunks[-1].due_ns == 1_000 + int(len(frame) * 1e9 / 11520)
    assert [c.due_ns for c in chunks] == sorted(c.due_ns for c in chunks)
    assert pacer.next_due() is None and pacer.queued_bytes == 0


def test_frames_queue_behind_each_other_on_the_line() -> None:
    """A frame received while the line is busy starts when the previous one has left."""
    pacer = Pacer(1000.0)  # 1 byte per ms
    pacer.push(delivery(b"a" * 100), 0)
    pacer.push(delivery(b"b" * 100), 10_000_000)
    assert [c.data for c in pacer.pop_due(50_000_000)] != []
    rest = pacer.pop_due(10**12)
    assert rest[-1].due_ns == 200_000_000
    later = Pacer(1000.0)
    later.push(delivery(b"a" * 10), 0)
    later.push(delivery(b"b" * 10), 1_000_000_000)  # after the line went quiet: starts at once
    assert later.pop_due(10**12)[-1].due_ns == 1_010_000_000


def test_only_due_pieces_come_out() -> None:
    """pop_due returns nothing before the first piece's time."""
    pacer = Pacer(1000.0, quantum_ns=10_000_000)  # pieces of 10 bytes
    pacer.push(delivery(b"x" * 25), 0)
    assert pacer.pop_due(9_999_999) == []
    assert [len(c.data) for c in pacer.pop_due(20_000_000)] == [10, 10]
    assert [len(c.data) for c in pacer.pop_due(10**12)] == [5]


def test_the_pacers_queue_is_bounded_in_whole_frames() -> None:
    """Over its limit a pacer drops the new frame whole and counts it."""
    pacer = Pacer(1000.0, limit=150)
    assert pacer.push(delivery(b"a" * 100), 0)
    assert not pacer.push(delivery(b"b" * 100), 0)
    assert pacer.dropped == 1 and pacer.queued_bytes == 100
    with pytest.raises(ValueError):
        Pacer(0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.integers(300, 1_000_000))
def test_paced_pieces_rebuild_every_frame_in_order(frames: list[bytes], baud: int) -> None:
    """Whatever the frames and the baud rate, the pieces are the frames, in order, on time."""
    pacer = Pacer.for_baud(baud)
    for n, frame in enumerate(frames):
        pacer.push(Delivery("v1", n, RAW, frame, 0), 0)
    chunks = pacer.pop_due(10**15)
    rebuilt: list[bytes] = []
    for chunk in chunks:
        if chunk.first:
            rebuilt.append(b"")
        rebuilt[-1] += chunk.data
    assert rebuilt == frames
    total = sum(map(len, frames))
    if frames:
        assert chunks[-1].due_ns == pacer.wire_ns(total) or abs(
            chunks[-1].due_ns - pacer.wire_ns(total)
        ) <= len(frames)


# --- output buffers ---------------------------------------------------------------------------


class Sink:
    """A descriptor that takes at most `room` bytes until told otherwise."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.got = bytearray()

    def write(self, view: memoryview) -> int:
        """Take what fits."""
        n = min(self.room, len(view))
        self.got += view[:n]
        self.room -= n
        return n


def test_a_frame_is_written_at_once_when_the_reader_keeps_up() -> None:
    """Nothing waits: the write takes it all."""
    buffer, sink = OutBuffer(100), Sink(10**6)
    buffer.offer(b"/frame!", sink.write)
    assert sink.got == b"/frame!" and buffer.pending == 0


def test_what_the_reader_does_not_take_waits_and_a_frame_that_does_not_fit_is_dropped_whole() -> (
    None
):
    """The rest waits for flush; a new frame over the limit is dropped whole and counted."""
    buffer, sink = OutBuffer(100), Sink(30)
    buffer.offer(b"a" * 50, sink.write)
    assert buffer.pending == 20
    buffer.offer(b"b" * 70, sink.write)  # 20 + 70 <= 100: taken
    buffer.offer(b"c" * 20, sink.write)  # 90 + 20 > 100: dropped
    assert buffer.pending == 90 and buffer.dropped == 1 and buffer.dropped_bytes == 20
    sink.room = 10**6
    assert buffer.flush(sink.write)
    assert bytes(sink.got) == b"a" * 50 + b"b" * 70


def test_the_limit_admits_a_frame_with_its_pieces_and_clear_starts_afresh() -> None:
    """Pieces follow their frame's admission; after clear() the frame under way is not taken."""
    buffer, sink = OutBuffer(10), Sink(0)
    buffer.offer(b"12345", sink.write, first=True, total=8)
    buffer.offer(b"678", sink.write, first=False)
    assert buffer.pending == 8
    buffer.offer(b"abcd", sink.write, first=True, total=8)
    buffer.offer(b"efgh", sink.write, first=False)
    assert buffer.pending == 8 and buffer.dropped == 1 and buffer.dropped_bytes == 8
    assert buffer.clear() == 8
    buffer.offer(b"tail", sink.write, first=False)
    assert buffer.pending == 0
    sink.room = 100
    buffer.offer(b"new", sink.write, first=True, total=3)
    assert bytes(sink.got) == b"new"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=60), max_size=20),
    st.lists(st.integers(0, 80), min_size=1, max_size=40),
    st.integers(1, 200),
)
def test_a_slow_reader_gets_whole_frames_in_order_and_never_a_torn_one(
    frames: list[bytes], rooms: list[int], limit: int
) -> None:
    """Whatever the reader takes each time, it gets a run of whole frames, in order."""
    buffer = OutBuffer(limit)
    sink = Sink(0)
    kept: list[bytes] = []
    for n, frame in enumerate(frames):
        sink.room = rooms[n % len(rooms)]
        dropped = buffer.dropped
        buffer.flush(sink.write)
        buffer.offer(frame, sink.write)
        if buffer.dropped == dropped:
            kept.append(frame)
    sink.room = 10**9
    assert buffer.flush(sink.write)
    assert bytes(sink.got) == b"".join(kept)
    assert buffer.dropped == len(frames) - len(kept)
