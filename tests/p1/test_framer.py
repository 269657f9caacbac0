"""The framer: the same frames however the stream is cut, resync, CRC forms, parity, bounds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import corpus
from gateway.p1 import (
    DEFAULT_MAX_FRAME_SIZE,
    DroppedFrame,
    DropReason,
    Frame,
    Framer,
    FramerCounters,
    FramerEvent,
    crc_hex,
)
from tests.p1.telegrams import belgian, telegram


def _corpus_frames() -> list[bytes]:
    """Whole frames cut from the corpus (CRC valid, invalid, absent) that end in a line end.

    (One corpus file masks its CRC as 'XXXX': its frame ends at '!' and only the bytes that
    follow can tell whether a CRC comes; it is no self-contained frame for these tests.)
    """
    frames = []
    for entry in corpus.entries():
        events = Framer().feed(entry.read())
        frames += [e.raw for e in events if isinstance(e, Frame) and e.raw.endswith(b"\n")]
    return frames


FRAMES = _corpus_frames()
NOISE = st.binary(max_size=40).map(lambda b: b.replace(b"/", b""))


def _feed(data: bytes, cuts: list[int], **options: object) -> tuple[list[FramerEvent], Framer]:
    """Feed `data` to a new framer in pieces cut at the sorted positions `cuts`."""
    framer = Framer(**options)  # type: ignore[arg-type]
    events: list[FramerEvent] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += framer.feed(data[start:cut])
        start = cut
    return events, framer


def _one_byte_at_a_time(data: bytes, **options: object) -> tuple[list[FramerEvent], Framer]:
    """Feed `data` one byte at a time."""
    return _feed(data, list(range(len(data))), **options)


stream_parts = st.lists(st.tuples(NOISE, st.sampled_from(FRAMES)), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=stream_parts, tail=NOISE, data=st.data())
def test_same_frames_whole_chunked_and_byte_by_byte(
    parts: list[tuple[bytes, bytes]], tail: bytes, data: st.DataObject
) -> None:
    """Frames with noise between them come out alike however the stream is cut."""
    stream = b"".join(noise + frame for noise, frame in parts) + tail
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    whole, whole_framer = _feed(stream, [])
    chunked, chunked_framer = _feed(stream, cuts)
    single, single_framer = _one_byte_at_a_time(stream)
    assert whole == chunked == single
    assert whole_framer.counters == chunked_framer.counters == single_framer.counters
    assert [e.raw for e in whole if isinstance(e, Frame)] == [frame for _, frame in parts]
    counters = whole_framer.counters
    assert counters.frames == len(parts)
    assert counters.noise_bytes == sum(len(noise) for noise, _ in parts) + len(tail)
    assert counters.bytes_in == len(stream)
    assert counters.crc_errors == sum(
        1 for e in whole if isinstance(e, Frame) and e.crc_ok is False
    )


@settings(max_examples=60, deadline=None)
@given(frame=st.sampled_from(FRAMES), cut=st.floats(0.05, 0.95), data=st.data())
def test_a_new_slash_mid_telegram_drops_the_cut_one_and_frames_the_next(
    frame: bytes, cut: float, data: st.DataObject
) -> None:
    """A telegram cut short by a new '/' is dropped (truncated) and the next one is framed."""
    partial = frame[: max(1, int(len(frame) * cut))]
    partial = partial[: partial.index(b"!")] if b"!" in partial else partial
    stream = partial + frame
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events, framer = _feed(stream, cuts)
    alone = Framer().feed(frame)
    assert events == [DroppedFrame(DropReason.TRUNCATED, len(partial), partial), *alone]
    assert len(alone) == 1 and isinstance(alone[0], Frame) and alone[0].raw == frame
    assert framer.counters.truncated == 1 and framer.counters.frames == 1


def test_a_drop_says_whether_its_last_byte_came_with_an_earlier_feed() -> None:
    """Cut by a '/' that opens the next feed, the drop ended before it; cut inside one, not."""
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    framer = Framer()
    assert framer.feed(good[:40]) == []
    (dropped, frame) = framer.feed(good)
    assert isinstance(dropped, DroppedFrame) and dropped.earlier
    assert dropped.raw == good[:40] and isinstance(frame, Frame)
    assert framer.feed(good[:40]) == []
    (dropped, frame) = framer.feed(b"xyz" + good)
    assert isinstance(dropped, DroppedFrame) and not dropped.earlier
    assert dropped.raw == good[:40] + b"xyz"


def test_cut_ends_a_partial_frame_as_truncated_with_its_bytes() -> None:
    """`cut()` (the line went quiet) hands out the partial frame; with none, it is None."""
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    framer = Framer()
    assert framer.cut() is None
    framer.feed(b"noise" + good[:50])
    assert framer.in_frame and framer.pending == 50
    dropped = framer.cut()
    assert dropped == DroppedFrame(DropReason.TRUNCATED, 50, good[:50])
    assert dropped is not None and dropped.earlier
    assert not framer.in_frame and framer.cut() is None
    assert framer.counters.truncated == 1
    (frame,) = framer.feed(good)
    assert isinstance(frame, Frame) and frame.raw == good


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 3 * DEFAULT_MAX_FRAME_SIZE), data=st.data())
def test_an_oversize_frame_keeps_its_first_bytes_and_counts_its_length_to_the_next_slash(
    size: int, data: st.DataObject
) -> None:
    """Over the bound: the first max_frame_size bytes and the length up to the next '/', which
    is framed; however the stream is cut; memory stays bounded."""
    limit = 1024
    run = b"/" + bytes(b"0123456789abcdef"[i % 16] for i in range(size - 1))
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    stream = run + good
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    events, framer = _feed(stream, cuts, max_frame_size=limit)
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.raw for f in frames] == [good]
    (dropped,) = [e for e in events if isinstance(e, DroppedFrame)]
    if size < limit:  # within the bound: a frame cut short by the next '/'
        assert dropped == DroppedFrame(DropReason.TRUNCATED, size, run)
        return
    assert dropped == DroppedFrame(DropReason.OVERSIZE, size, run[:limit])
    assert framer.counters.oversize == 1 and framer.counters.noise_bytes == 0


def test_crc_of_three_hex_digits_is_accepted() -> None:
    """The real device that drops the CRC's leading zero ('!B9F') gives a good frame."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_UNPADDED_CRC").read()
    (frame,) = Framer().feed(raw)
    assert isinstance(frame, Frame)
    assert frame.crc_given == "B9F" and frame.crc_ok is True and frame.raw == raw


@pytest.mark.parametrize("digits", ["{:04X}", "{:04x}", "{:X}", "{:x}"])
def test_crc_digits_in_either_case_with_or_without_leading_zeros(digits: str) -> None:
    """1 to 4 hex digits, upper or lower case, all check out."""
    body = b"/XYZ5\\1\r\n\r\n1-0:1.8.1(000001.000*kWh)\r\n!"
    for filler in range(40):  # find bodies whose CRC has leading zeros too
        candidate = body.replace(b"001.000", f"{filler:03d}.000".encode())
        crc = int(crc_hex(candidate), 16)
        raw = candidate + digits.format(crc).encode() + b"\r\n"
        (frame,) = Framer().feed(raw)
        assert isinstance(frame, Frame) and frame.crc_ok is True, raw
        bad = candidate + digits.format(crc ^ 0x1).encode() + b"\r\n"
        (frame,) = Framer().feed(bad)
        assert isinstance(frame, Frame) and frame.crc_ok is False


def test_crc_less_frames_are_framed_without_a_verdict() -> None:
    """DSMR 2.2 / 3 frames end '!' CR LF: crc_given and crc_ok are None."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V2_2").read()
    (frame,) = Framer().feed(raw)
    assert isinstance(frame, Frame)
    assert frame.crc_given is None and frame.crc_ok is None and not frame.has_crc
    assert frame.raw == raw and frame.body == raw[: raw.index(b"!") + 1]


@settings(max_examples=100, deadline=None)
@given(parts=stream_parts, data=st.data())
def test_seven_bit_parity_is_stripped_when_asked(
    parts: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    """A 7E1 stream read as 8N1 (bit 7 set on some bytes) gives the clean frames back."""
    seven_bit = bytes(b & 0x7F for b in range(256))
    clean = b"".join(n.translate(seven_bit).replace(b"/", b"") + f for n, f in parts)
    marks = data.draw(st.lists(st.booleans(), min_size=len(clean), max_size=len(clean)))
    dirty = bytes(b | 0x80 if mark else b for b, mark in zip(clean, marks, strict=True))
    cuts = data.draw(st.lists(st.integers(0, len(dirty)), max_size=10))
    stripped, _ = _feed(dirty, cuts, strip_parity=True)
    expected, _ = _feed(clean, [])
    assert stripped == expected
    assert [e.raw for e in stripped if isinstance(e, Frame)] == [frame for _, frame in parts]


def test_a_dropped_seven_bit_frame_holds_its_bytes_with_bit_7_cleared() -> None:
    """Evidence from a 7E1 meter read as 8N1: the bytes as framed, parity bit cleared."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V3").read()
    dirty = bytes(b | 0x80 for b in raw)
    framer = Framer(strip_parity=True)
    framer.feed(dirty[:100])
    (dropped, frame) = framer.feed(dirty)
    assert isinstance(dropped, DroppedFrame) and dropped.raw == raw[:100]
    assert isinstance(frame, Frame) and frame.raw == raw
    framer.feed(dirty[:50])
    assert framer.cut() == DroppedFrame(DropReason.TRUNCATED, 50, raw[:50])


def test_parity_bits_break_frames_when_not_stripped() -> None:
    """Without strip_parity the same dirty bytes do not give the frames (the option matters)."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V3").read()
    dirty = bytes(b | 0x80 if b in b"!/" else b for b in raw)
    assert not [e for e in Framer().feed(dirty) if isinstance(e, Frame)]
    assert [e.raw for e in Framer(strip_parity=True).feed(dirty) if isinstance(e, Frame)] == [raw]


@pytest.mark.parametrize("chunk", [1, 7, 4096, 200_000])
def test_a_run_without_end_is_dropped_counted_and_bounded(chunk: int) -> None:
    """A 100 KB run after '/' with no '!' is dropped as oversize; memory stays bounded."""
    flood = b"/" + b"1-0:1.8.1(000001.000*kWh)\r\n".replace(b"/", b"") * 3800
    assert len(flood) > 100_000
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    stream = flood + good
    framer = Framer()
    events: list[FramerEvent] = []
    for start in range(0, len(stream), chunk):
        events += framer.feed(stream[start : start + chunk])
        assert framer.pending <= DEFAULT_MAX_FRAME_SIZE
    assert events[0] == DroppedFrame(
        DropReason.OVERSIZE, len(flood), flood[:DEFAULT_MAX_FRAME_SIZE]
    )
    assert [e.raw for e in events if isinstance(e, Frame)] == [good]
    assert framer.counters.oversize == 1
    assert framer.counters.noise_bytes == 0  # the run's bytes are the oversize frame's


def test_an_oversize_frame_still_running_is_ended_by_cut() -> None:
    """A quiet line or a lost port ends an oversize frame where it stands: its length so far."""
    framer = Framer(max_frame_size=100)
    run = b"/" + b"x" * 299
    assert framer.feed(run) == []
    assert framer.in_frame and framer.pending == 0
    assert framer.cut() == DroppedFrame(DropReason.OVERSIZE, 300, run[:100])
    assert not framer.in_frame and framer.counters.oversize == 1


def test_a_smaller_bound_is_honoured() -> None:
    """max_frame_size is the bound: a frame over it is dropped, one under it passes."""
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    framer = Framer(max_frame_size=len(good) - 10)
    assert framer.feed(good) == []
    assert framer.feed(good)[0] == DroppedFrame(DropReason.OVERSIZE, len(good), good[:-10])
    assert [e for e in Framer(max_frame_size=len(good)).feed(good) if isinstance(e, Frame)]


def test_noise_bytes_are_counted() -> None:
    """Bytes before the first '/' and between frames are counted as noise."""
    good = belgian("1-0:1.8.1(000001.000*kWh)")
    framer = Framer()
    events = framer.feed(b"xx!!\x00" + good + b"\xff\xfe" + good)
    assert len([e for e in events if isinstance(e, Frame)]) == 2
    assert framer.counters == FramerCounters(frames=2, noise_bytes=7, bytes_in=7 + 2 * len(good))


def test_reset_forgets_a_partial_frame_but_not_the_counters() -> None:
    """After reset() a half telegram is gone; the next whole one is framed."""
    good = telegram("1-3:0.2.8(50)", "1-0:1.8.1(000001.000*kWh)", header="ISK5\\2M550T-1011")
    framer = Framer()
    assert framer.feed(good[:30]) == []
    framer.reset()
    assert framer.pending == 0
    (frame,) = framer.feed(good)
    assert isinstance(frame, Frame) and frame.raw == good
    assert framer.counters.bytes_in == 30 + len(good)
