"""The tap's pure core: what to write for which variant, in order and once; pacing; bounded output.

No IO, no threads, no clock of its own: every time is passed in.

- `TapCore.feed(topic, payload, user_properties, received_ns)` takes one MQTT message of the
  holder's slot topics (`p1/R/slot/H/V/raw`: the telegram's exact bytes; `.../invalid`: JSON
  whose `raw` holds the frame's bytes as latin-1 code points) and returns the `Delivery` to
  write, or None. A variant's messages share one `seq` counter (a `raw` carries its telegram's
  seq as the MQTT 5 user property `seq`), strictly increasing, never reused: a message is written
  only when its seq is above the last one written for its variant, so nothing is written twice
  (a redelivery after an outage) and the order stays the gateway's (a message older than one
  already written is dropped, not written out of order).
- `Pacer` spreads a variant's bytes over time at the meter's line rate (BAUD / 10 bytes/s: a
  start bit, 8 data bits or 7 with parity, a stop bit), telegram after telegram as on the line.
- `OutBuffer` is one output's bounded queue: whole telegrams are taken or dropped, never torn by
  the bound, and whatever the descriptor does not take now waits without holding anyone up.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.identifiers import (
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)

RAW = "raw"
INVALID = "invalid"

#: How many written seqs each variant remembers, to tell a duplicate from a late message.
REMEMBERED_SEQS = 1024

#: The bits a serial line spends on one byte (start + 8 data, or 7 data + parity, + stop).
BITS_PER_BYTE = 10

#: Paced bytes go out in pieces of about this much line time.
PACE_QUANTUM_NS = 5_000_000

#: Each output holds at most this many bytes that its reader has not taken yet.
OUTPUT_LIMIT = 1 << 20

#: A paced variant's queue holds at most this many bytes not yet due.
PACER_LIMIT = 4 << 20


@dataclass(frozen=True, slots=True)
class Delivery:
    """One frame to write to a variant's outputs: its bytes, its seq and when it was received."""

    variant: str
    seq: int | None
    """None for a message without a seq (a gateway speaking MQTT 3.1.1 has no user properties)."""
    kind: str
    """`raw` (a valid telegram) or `invalid` (a frame whose CRC failed, or cut short)."""
    data: bytes
    received_ns: int


@dataclass(slots=True)
class VariantCounters:
    """What the core did with one variant's messages."""

    written: int = 0
    """Deliveries handed out (valid and invalid)."""
    invalid: int = 0
    """Of those, invalid frames."""
    duplicates: int = 0
    """Messages whose seq was already written (redeliveries): dropped."""
    late: int = 0
    """Messages older than one already written, never written themselves: dropped for order."""
    skipped_invalid: int = 0
    """Invalid frames not written because of `valid_only`."""
    unsequenced: int = 0
    """Messages without a seq, written as they came (not deduplicated)."""
    malformed: int = 0
    """Messages that could not be read (bad seq property, invalid JSON without its bytes)."""

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _VariantState:
    """One variant's dedupe state: the last seq written and the recently written ones."""

    last: int | None = None
    recent: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)
    counters: VariantCounters = field(default_factory=VariantCounters)

    def remember(self, seq: int) -> None:
        """Note `seq` as written."""
        self.last = seq
        self.recent.add(seq)
        self.order.append(seq)
        if len(self.order) > REMEMBERED_SEQS:
            self.recent.discard(self.order.popleft())


class TapCore:
    """The holder's slot messages of one rig in, each variant's frames out: in order, once."""

    def __init__(
        self,
        *,
        rig: str,
        holder: str,
        variants: Iterable[str],
        valid_only: bool = False,
        prefix: str = "p1",
    ) -> None:
        self.rig = validate_rig_id(rig)
        self.holder = validate_holder(holder)
        self.prefix = validate_topic_prefix(prefix)
        self.valid_only = valid_only
        self.variants: tuple[str, ...] = tuple(dict.fromkeys(variants))
        if not self.variants:
            raise ValueError("a tap needs at least one variant")
        self._states: dict[str, _VariantState] = {}
        self._routes: dict[str, tuple[str, str]] = {}
        for variant in self.variants:
            validate_variant_id(variant)
            self._states[variant] = _VariantState()
            base = f"{self.prefix}/{self.rig}/slot/{self.holder}/{variant}"
            self._routes[f"{base}/{RAW}"] = (variant, RAW)
            self._routes[f"{base}/{INVALID}"] = (variant, INVALID)
        self.foreign = 0
        """Messages on a topic the tap did not ask for (a subscription left in an old session)."""

    def topics(self) -> list[str]:
        """The topics to subscribe to: each variant's `raw`, and `invalid` unless valid-only."""
        return [
            topic for topic, (_, kind) in self._routes.items() if kind == RAW or not self.valid_only
        ]

    def counters(self, variant: str) -> VariantCounters:
        """What the core did with `variant`'s messages so far."""
        return self._states[variant].counters

    def last_seq(self, variant: str) -> int | None:
        """The seq of the last frame written for `variant` (None before the first)."""
        return self._states[variant].last

    def feed(
        self,
        topic: str,
        payload: bytes,
        user_properties: Sequence[tuple[str, str]],
        received_ns: int,
    ) -> Delivery | None:
        """One received message; the frame to write for it, or None (a duplicate, late, ...)."""
        route = self._routes.get(topic)
        if route is None:
            self.foreign += 1
            return None
        variant, kind = route
        state = self._states[variant]
        counters = state.counters
        seq_text = None
        for key, value in user_properties:
            if key == "seq":
                seq_text = value
                break
        if kind == RAW:
            data = bytes(payload)
        else:
            if self.valid_only:
                counters.skipped_invalid += 1
                return None
            try:
                document = json.loads(payload)
                data = document["raw"].encode("latin-1")
                if seq_text is None and "seq" in document:
                    seq_text = str(document["seq"])
            except (ValueError, TypeError, KeyError, AttributeError, UnicodeError):
                counters.malformed += 1
                return None
        if seq_text is None:
            seq = None
            counters.unsequenced += 1
        else:
            try:
                seq = int(seq_text)
            except ValueError:
                counters.malformed += 1
                return None
            last = state.last
            if last is not None and seq <= last:
                if seq in state.recent or seq == last:
                    counters.duplicates += 1
                else:
                    counters.late += 1
                return None
            state.remember(seq)
        counters.written += 1
        if kind == INVALID:
            counters.invalid += 1
        return Delivery(variant, seq, kind, data, received_ns)


# --- pacing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a paced frame, due at `due_ns` (when its last byte leaves the line)."""

    due_ns: int
    data: bytes
    first: bool
    """The frame's first piece (a reader that joins mid-frame waits for the next one of these)."""
    last: bool
    total: int
    """The whole frame's length."""
    delivery: Delivery


class Pacer:
    """One variant's line: frames leave at `bytes_per_s`, one after the other, in pieces."""

    def __init__(
        self,
        bytes_per_s: float,
        *,
        quantum_ns: int = PACE_QUANTUM_NS,
        limit: int = PACER_LIMIT,
    ) -> None:
        if not bytes_per_s > 0:
            raise ValueError("the line rate must be positive")
        self.bytes_per_s = float(bytes_per_s)
        self.piece = max(1, int(self.bytes_per_s * quantum_ns / 1e9))
        self.limit = limit
        self._queue: deque[Chunk] = deque()
        self._queued_bytes = 0
        self._free_ns: int | None = None
        self.dropped = 0
        """Frames dropped because the queue was over its limit."""

    @classmethod
    def for_baud(cls, baud: int, **kwargs: int) -> Pacer:
        """A pacer for a serial line of `baud` bits per second (10 bits a byte)."""
        return cls(baud / BITS_PER_BYTE, **kwargs)

    def wire_ns(self, size: int) -> int:
        """How long `size` bytes take on the line."""
        return int(size * 1e9 / self.bytes_per_s)

    def push(self, delivery: Delivery, now_ns: int) -> bool:
        """Queue a frame behind those on the line; False when it was dropped (queue full)."""
        data = delivery.data
        size = len(data)
        if size == 0:
            return True
        if self._queued_bytes and self._queued_bytes + size > self.limit:
            self.dropped += 1
            return False
        free = self._free_ns
        start = now_ns if free is None or free < now_ns else free
        piece = self.piece
        for offset in range(0, size, piece):
            end = min(size, offset + piece)
            self._queue.append(
                Chunk(
                    start + self.wire_ns(end),
                    data[offset:end],
                    offset == 0,
                    end == size,
                    size,
                    delivery,
                )
            )
        self._queued_bytes += size
        self._free_ns = start + self.wire_ns(size)
        return True

    def next_due(self) -> int | None:
        """When the next piece is due (None: nothing queued)."""
        return self._queue[0].due_ns if self._queue else None

    def pop_due(self, now_ns: int) -> list[Chunk]:
        """The pieces due by `now_ns`, in order."""
        out: list[Chunk] = []
        queue = self._queue
        while queue and queue[0].due_ns <= now_ns:
            chunk = queue.popleft()
            self._queued_bytes -= len(chunk.data)
            out.append(chunk)
        return out

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet due."""
        return self._queued_bytes


# --- one output's bounded queue --------------------------------------------------------------

#: A write: as many bytes of the view as the descriptor takes now (0: none; raise: it is gone).
Writer = Callable[[memoryview], int]


class OutBuffer:
    """What one output (a TCP client, a pty) has not taken yet: bounded, in whole frames.

    A frame is taken whole or dropped whole (counted): when the bytes waiting plus the new
    frame would exceed `limit`, the frame is dropped; a frame taken is kept until written, so
    the bound never tears one. With nothing waiting, a frame is written at once (no copy).
    """

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self._parts: deque[memoryview] = deque()
        self.pending = 0
        """Bytes taken and not yet written."""
        self._taking = True
        self.dropped = 0
        """Frames dropped because they did not fit."""
        self.dropped_bytes = 0
        self.written_bytes = 0

    def offer(self, data: bytes, write: Writer, *, first: bool = True, total: int = -1) -> None:
        """Take a frame (or a piece of one: `first` marks a frame's start, `total` its length).

        Writes what `write` takes now when nothing waits before it; keeps the rest. `write`
        may raise OSError (the output is gone): the caller then drops this output.
        """
        if first:
            size = len(data) if total < 0 else total
            self._taking = self.pending == 0 or self.pending + size <= self.limit
            if not self._taking:
                self.dropped += 1
        if not self._taking:
            self.dropped_bytes += len(data)
            return
        view = memoryview(data)
        if not self.pending:
            n = write(view)
            self.written_bytes += n
            if n >= len(view):
                return
            view = view[n:]
        self._parts.append(view)
        self.pending += len(view)

    def flush(self, write: Writer) -> bool:
        """Write what waits, as far as `write` takes it; True when nothing waits any more."""
        parts = self._parts
        while parts:
            view = parts[0]
            n = write(view)
            self.written_bytes += n
            self.pending -= n
            if n < len(view):
                parts[0] = view[n:]
                return False
            parts.popleft()
        return True

    def clear(self) -> int:
        """Forget what waits (the reader went away); the bytes forgotten.

        The rest of a frame under way is not taken either: the next frame starts afresh.
        """
        gone = self.pending
        self._parts.clear()
        self.pending = 0
        self._taking = False
        return gone
