"""Read coalescing: when a port's frame in progress will end, so the reader need not wake sooner.

A meter writes a telegram (0.5 to 1.5 kB) at line pace, and a serial adapter hands it over in
many small pieces (a USB packet every few ms; the simulator ~115 bytes every 10 ms). Waking for
every piece costs a context switch each. After the read that begins a frame, the reader leaves
the port alone ("parks" it) until shortly before the frame should end, reads everything that came
meanwhile in one go, and then waits for the last piece on readiness as usual: about three reads
per telegram instead of one per piece, and no added latency as long as the frame does not end
earlier than predicted.

`ReadCoalescer` is the pure decision, one per port: no IO, no clock; every call takes the time
of the read it learns from. The predicted end of a frame begun by a read at `t0` that brought
`p` of its bytes is

    t0 + (size - p) * byte_time + lag

- `size`: the smallest of the last few frames' sizes (exact: known when a frame completes, so a
  shorter frame is learned at once);
- `byte_time`: the line's time per character (start, data, parity and stop bits at the baud
  rate): bytes cannot come faster, and a meter writes at line pace. Anchoring on bytes rather
  than on a duration makes the prediction insensitive to how much the first read happened to
  get (an adapter's or the simulator's first burst varies from frame to frame);
- `lag`: the smallest of the last 16 observed differences between a frame's real end (the read
  on readiness that completed it) and that line-time estimate: it absorbs adapter latency,
  chunking and a late first read. A frame found already complete by a parked read ended at some
  unknown moment since the previous read, so its sample is the earliest that end can have been
  (the previous read plus the line time of the bytes this read got, at most this read minus
  twice the guard): the next parks end sooner, and true samples replace it.

The port is parked until the predicted end minus the guard (a few ms: it covers the epoll
timeout's 1 ms resolution and the wake-up's lateness), for at most `MAX_PARKED_BYTES` of line
time; not at all when that is less than `MIN_PARK_NS` away, before `MIN_SAMPLES` frames were
seen, or for `WINDOW` frames after one arrived within a single read (a flood, a socket source,
whole writes): such ports never park.
"""

from __future__ import annotations

from collections import deque

#: How many recent frame sizes the prediction looks at (it takes the smallest).
WINDOW = 4
#: How many recent lags it looks at (the smallest): long, because a frame's end varies by up to
#: one delivery piece (10 ms in the simulator) and a long window's minimum covers that spread.
LAG_WINDOW = 16
#: Frames a port must have shown before its next one is predicted.
MIN_SAMPLES = 3
#: Parking for less than this saves nothing: the port stays armed instead.
MIN_PARK_NS = 2_000_000
#: How many bytes a parked port may gather before the reader looks: well under the 4 KiB
#: a tty's line discipline buffers (a real adapter without flow control loses what overflows).
MAX_PARKED_BYTES = 2048


def byte_time_ns(baudrate: int, bytesize: int, parity: str, stopbits: float) -> int:
    """How long one character takes on the line: start bit, data bits, parity bit, stop bits."""
    bits = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return max(1, round(bits * 1e9 / max(1, baudrate)))


class ReadCoalescer:
    """One port's frame-end prediction: tells the reader when to read next without readiness."""

    __slots__ = (
        "_byte_ns",
        "_first_ns",
        "_first_pending",
        "_guard_ns",
        "_lags",
        "_last_read_ns",
        "_max_park_ns",
        "_sizes",
        "_whole",
        "_window",
    )

    def __init__(self, *, guard_ns: int, byte_ns: int, window: int = WINDOW) -> None:
        self._guard_ns = guard_ns
        self._byte_ns = byte_ns
        self._max_park_ns = MAX_PARKED_BYTES * byte_ns
        self._window = window
        self._sizes: deque[int] = deque(maxlen=window)
        self._lags: deque[int] = deque(maxlen=LAG_WINDOW)
        self._whole = 0
        """Frames still to see before parking again, after one came within one read."""
        self._first_ns: int | None = None
        """Time of the read that began the frame in progress; -1 when not known; None: none."""
        self._first_pending = 0
        self._last_read_ns = 0

    def reset(self) -> None:
        """Forget everything (the port was closed, reopened or changed)."""
        self._sizes.clear()
        self._lags.clear()
        self._whole = 0
        self._first_ns = None
        self._last_read_ns = 0

    def abandon(self) -> None:
        """The frame in progress ended without completing (cut short): forget where it began."""
        self._first_ns = None

    @property
    def prediction(self) -> tuple[int, int] | None:
        """(frame size in bytes, lag in ns behind the line rate), or None while parking is off."""
        if len(self._lags) < MIN_SAMPLES or self._whole:
            return None
        return min(self._sizes), min(self._lags)

    def after_read(
        self,
        now_ns: int,
        nbytes: int,
        *,
        began_partial: bool,
        pending: int,
        frame_sizes: list[int],
        dropped: bool,
        parked: bool,
    ) -> int:
        """Learn from one read; return when to read the port next unasked (0: arm it instead).

        `began_partial`: the framer held part of a frame before the read; `pending`: the bytes
        of an unfinished frame it holds after it; `frame_sizes`: the sizes of the whole frames
        the read completed; `dropped`: whether it dropped one; `parked`: the read was made at a
        park deadline rather than on readiness.
        """
        first = self._first_ns
        if frame_sizes or dropped:
            if len(frame_sizes) == 1 and not dropped and began_partial and first is not None:
                if first >= 0:
                    self._learn(now_ns, nbytes, frame_sizes[0], first, parked)
            elif frame_sizes and not dropped:
                self._whole = self._window  # whole frames in one read: do not park for a while
            first = None
        if pending:
            if first is None:
                first = -1 if began_partial and not (frame_sizes or dropped) else now_ns
                self._first_pending = pending
        else:
            first = None
        self._first_ns = first
        self._last_read_ns = now_ns
        prediction = self.prediction
        if first is None or first < 0 or prediction is None:
            return 0
        size, lag = prediction
        target = first + (size - self._first_pending) * self._byte_ns + lag - self._guard_ns
        if target - now_ns < MIN_PARK_NS:
            return 0
        return min(target, now_ns + self._max_park_ns)

    def _learn(self, now_ns: int, nbytes: int, size: int, first: int, parked: bool) -> None:
        """Take a frame that began at an earlier read and was completed by this one."""
        if self._whole:
            self._whole -= 1
        self._sizes.append(size)
        end = now_ns
        if parked:  # it ended at some moment since the last read: take the earliest it can be
            end = min(now_ns - 2 * self._guard_ns, self._last_read_ns + nbytes * self._byte_ns)
        self._lags.append(end - first - (size - self._first_pending) * self._byte_ns)
