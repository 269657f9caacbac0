"""The P1 framer: bytes in, whole frames out, with no IO, clock or logging of its own.

A frame runs from '/' through '!', then 0 to 4 hex digits of CRC, then CR LF. The framer
resynchronises on every '/', so a telegram cut short by a new '/' is dropped (counted as
truncated, its bytes handed out as evidence) and the new one is framed. Bytes outside frames are
counted as noise. A frame that grows past `max_frame_size` without its end is oversize: its
first `max_frame_size` bytes are kept, the rest is only counted up to the next '/', where it is
dropped, so memory stays bounded whatever the line carries. Feeding the stream whole or one byte
at a time gives the same frames.

The framer has no clock: a line that goes quiet inside a frame is the caller's to notice, and
`cut()` then ends the frame as truncated (or an oversize one where it stands).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.p1.crc import crc16

DEFAULT_MAX_FRAME_SIZE = 16 * 1024

#: How many hex digits a CRC may have: one real device drops leading zeros ('!B9F').
_MAX_CRC_DIGITS = 4
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_STRIP_PARITY = bytes(b & 0x7F for b in range(256))


@dataclass(frozen=True, slots=True)
class Frame:
    """One whole frame, exactly as received: '/' through the line end after the CRC."""

    raw: bytes
    crc_given: str | None
    """The hex digits after '!' as sent (None when the frame carries no CRC)."""
    crc_ok: bool | None
    """True or False when a CRC was sent, None for CRC-less frames (DSMR 2.2 / 3)."""
    crc_computed: int | None = None
    """The CRC of the frame's bytes, when the frame carries one to compare it with."""

    @property
    def body(self) -> bytes:
        """The bytes the CRC covers: '/' through '!' inclusive."""
        return self.raw[: self.raw.rindex(b"!") + 1]

    @property
    def has_crc(self) -> bool:
        """Whether the meter sent a CRC with this frame."""
        return self.crc_given is not None


class DropReason(enum.Enum):
    """Why the framer dropped the bytes of a frame it had started."""

    OVERSIZE = "oversize"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class DroppedFrame:
    """A started frame that was dropped: too large, or cut short (by a new '/', or by `cut`)."""

    reason: DropReason
    size: int
    """The frame's whole length in bytes: for an oversize one, counted up to where it ended."""
    raw: bytes = b""
    """Its bytes from '/' on, at most `max_frame_size` of them (parity stripped when asked)."""
    earlier: bool = field(default=False, compare=False)
    """Its last byte came with an earlier `feed` than the one that reports it (the new '/' that
    ended it was the first byte of this one), or it was ended by `cut`."""


FramerEvent = Frame | DroppedFrame


@dataclass(slots=True)
class FramerCounters:
    """Running totals of what a framer has seen since it was made."""

    frames: int = 0
    crc_errors: int = 0
    oversize: int = 0
    truncated: int = 0
    noise_bytes: int = 0
    bytes_in: int = 0


@dataclass(slots=True)
class Framer:
    """Turns a P1 byte stream into frames; one per port, fed whatever the port delivers."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    strip_parity: bool = False
    """Clear bit 7 of every byte: a 7E1 stream read as 8N1 (DSMR 2.2 / 3)."""
    counters: FramerCounters = field(default_factory=FramerCounters)
    _buf: bytearray = field(default_factory=bytearray, repr=False)
    _scan: int = field(default=1, repr=False)
    _fresh: int = field(default=0, repr=False)
    """Where the bytes of the current `feed` begin in the buffer (those before came earlier)."""
    _over: bytes | None = field(default=None, repr=False)
    """While an oversize frame runs on to the next '/': its first `max_frame_size` bytes."""
    _over_size: int = field(default=0, repr=False)
    """...and its length so far."""

    def feed(self, data: bytes) -> list[FramerEvent]:
        """Take the next bytes of the stream; return the frames and drops they complete."""
        counters = self.counters
        counters.bytes_in += len(data)
        if self.strip_parity:
            data = data.translate(_STRIP_PARITY)
        events: list[FramerEvent] = []
        if self._over is not None:
            start = data.find(b"/")
            if start < 0:
                self._over_size += len(data)
                return events
            self._over_size += start
            events.append(self._end_oversize(earlier=start == 0))
            data = data[start:] if start else data
        if not self._buf:
            start = data.find(b"/")
            if start < 0:
                counters.noise_bytes += len(data)
                return events
            counters.noise_bytes += start
            data = data[start:] if start else data
        self._fresh = len(self._buf)
        self._buf += data
        while self._buf and self._step(events):
            pass
        return events

    def cut(self) -> DroppedFrame | None:
        """End the frame in progress here (the line went quiet, or the port was lost): a
        truncated drop with its bytes, or the oversize one where it stands; None if none."""
        if self._over is not None:
            return self._end_oversize(earlier=True)
        if not self._buf:
            return None
        self.counters.truncated += 1
        dropped = DroppedFrame(DropReason.TRUNCATED, len(self._buf), bytes(self._buf), True)
        self.reset()
        return dropped

    def reset(self) -> None:
        """Forget a partial frame (say, after the port was reopened); counters stay."""
        self._buf.clear()
        self._scan = 1
        self._fresh = 0
        self._over = None
        self._over_size = 0

    @property
    def pending(self) -> int:
        """How many bytes of an unfinished frame are buffered."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """Whether a frame has begun and not ended (an oversize one included)."""
        return bool(self._buf) or self._over is not None

    def _step(self, events: list[FramerEvent]) -> bool:
        """Advance over the buffer, which starts with '/'; return False when it needs more bytes."""
        buf = self._buf
        # A frame's body ('/' through '!') must fit in max_frame_size: look no further.
        limit = min(len(buf), self.max_frame_size)
        bang = buf.find(b"!", self._scan, limit)
        restart = buf.find(b"/", self._scan, bang if bang >= 0 else limit)
        if restart >= 0:
            self._truncated(restart, events)
            return True
        if bang < 0:
            if len(buf) >= self.max_frame_size:
                self._oversize(events)
                return True
            self._scan = len(buf)
            return False
        end = self._frame_end(bang)
        if end is None:
            self._scan = bang
            return False
        self._emit(bang, end, events)
        return True

    def _frame_end(self, bang: int) -> int | None:
        """Where the frame that has '!' at `bang` ends (exclusive), or None if not yet known."""
        buf = self._buf
        pos = bang + 1
        limit = len(buf)
        digits = 0
        while pos < limit and digits < _MAX_CRC_DIGITS and buf[pos] in _HEX_DIGITS:
            pos += 1
            digits += 1
        if pos >= limit:
            return None
        if buf[pos] == 0x0D:  # CR: the LF should follow
            if pos + 1 >= limit:
                return None
            return pos + 2 if buf[pos + 1] == 0x0A else pos + 1
        if buf[pos] == 0x0A:
            return pos + 1
        return pos  # no line end: the frame stops after its CRC digits

    def _emit(self, bang: int, end: int, events: list[FramerEvent]) -> None:
        """Cut the frame [0, end) out of the buffer and report it, CRC checked."""
        buf = self._buf
        raw = bytes(buf[:end])
        digits = raw[bang + 1 :].rstrip(b"\r\n")
        counters = self.counters
        counters.frames += 1
        if digits:
            given = digits.decode("ascii")
            computed = crc16(raw[: bang + 1])
            ok = computed == int(given, 16)
            if not ok:
                counters.crc_errors += 1
            events.append(Frame(raw, given, ok, computed))
        else:
            events.append(Frame(raw, None, None))
        self._consume(end)

    def _truncated(self, size: int, events: list[FramerEvent]) -> None:
        """Drop the first `size` buffered bytes: a frame cut short by the '/' that follows."""
        self.counters.truncated += 1
        raw = bytes(self._buf[:size])
        events.append(DroppedFrame(DropReason.TRUNCATED, size, raw, size <= self._fresh))
        self._consume(size)

    def _oversize(self, events: list[FramerEvent]) -> None:
        """The buffered frame reached `max_frame_size` without its end: keep its first bytes,
        and count the rest up to the next '/' (in the buffer, or in the bytes still to come)."""
        buf = self._buf
        limit = self.max_frame_size
        self._over = bytes(buf[:limit])
        start = buf.find(b"/", limit)
        if start < 0:
            self._over_size = len(buf)
            buf.clear()
            self._scan = 1
            self._fresh = 0
            return
        self._over_size = start
        events.append(self._end_oversize(earlier=start <= self._fresh))
        del buf[:start]
        self._scan = 1
        self._fresh = max(0, self._fresh - start)

    def _end_oversize(self, *, earlier: bool) -> DroppedFrame:
        """The oversize frame ends here: its drop, with its first bytes and its whole length."""
        raw, size = self._over or b"", self._over_size
        self._over, self._over_size = None, 0
        self.counters.oversize += 1
        return DroppedFrame(DropReason.OVERSIZE, size, raw, earlier)

    def _consume(self, size: int) -> None:
        """Remove `size` bytes; skip any noise after them up to the next '/'."""
        buf = self._buf
        start = buf.find(b"/", size)
        if start < 0:
            self.counters.noise_bytes += len(buf) - size
            buf.clear()
            self._fresh = 0
        else:
            self.counters.noise_bytes += start - size
            del buf[:start]
            self._fresh = max(0, self._fresh - start)
        self._scan = 1
