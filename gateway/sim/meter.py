"""One simulated meter: a pseudo-terminal that emits a model's telegrams like the real meter.

The meter owns a pty pair. The master side is where the meter "talks" (non-blocking: when
nobody reads and the pty buffer is full, whole telegrams are dropped and counted, the meter
never blocks); the slave side's path (or a symlink to it) is what the gateway opens. The
meter keeps its own slave descriptor open, set raw, so bytes are never cooked (CR LF kept)
and the pty lives while the gateway closes and reopens it.

Time: telegram slot i carries meter time start + i * interval. At the model's interval that
is the wall clock, as on a real meter; at a flood rate the meter's clock runs fast, one
interval per telegram, so meter times stay distinct and in order.

A SimulatedMeter is driven by a `VirtualRig` thread; its fault methods may be called from
any thread.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import random
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.sim.catalogue import MeterModel

#: Even parity in bit 7 of a 7-bit character, as a 7E1 line carries it to an 8-bit reader.
EVEN_PARITY = bytes((b & 0x7F) | (0x80 if bin(b & 0x7F).count("1") % 2 else 0) for b in range(256))
DEFAULT_BACKLOG_LIMIT = 32 * 1024
_PACING_BURST_S = 0.05
_LINE_REFILL = 2048


class NoiseKind(enum.Enum):
    """What a burst of line noise looks like to the gateway's framer."""

    GARBAGE = "garbage"
    """Random bytes that never hold '/': all of it is counted as noise."""
    UNTERMINATED = "unterminated"
    """A '/' then bytes that never hold '!' or '/': a frame that outgrows the framer's bound."""


@dataclass(frozen=True, slots=True)
class MeterStats:
    """What a simulated meter has done so far."""

    variant: str
    port: str | None
    """What the gateway should open: the symlink if there is one, else the pty path."""
    pty: str | None
    """The current /dev/pts/N (None while unplugged)."""
    plugged: bool
    telegrams: int
    """Telegrams queued to the line (their sequence numbers are 1..telegrams)."""
    dropped: int
    """Telegrams dropped because nobody read the port and its buffer was full."""
    bytes_written: int
    noise_written: int
    noise_pending: int
    backlog: int
    unplugs: int
    last_plug_monotonic_ns: int | None
    """When the current pty was opened (time.monotonic_ns)."""
    last_unplug_monotonic_ns: int | None
    """When the meter was last unplugged (its pty closed)."""


class SimulatedMeter:
    """A model's telegrams on a pseudo-terminal, with faults on demand."""

    def __init__(
        self,
        model: MeterModel,
        *,
        link_dir: Path | None = None,
        rate: float | str | None = None,
        line_pacing: bool = True,
        start_time: datetime | None = None,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        remember: int = 8192,
        seed: int = 0,
        lock: threading.RLock | None = None,
    ) -> None:
        self.model = model
        self.variant = model.id
        self.link = None if link_dir is None else Path(link_dir) / model.id
        self.line_pacing = line_pacing
        self.backlog_limit = backlog_limit
        self._line_mode, self._period_ns = _rate_period(rate, model.interval_s)
        now = datetime.now(UTC).replace(microsecond=0)
        self.start_time = start_time or now
        self._lock = lock or threading.RLock()
        self._rng = random.Random(seed)
        noise = bytearray(self._rng.randbytes(65536))
        self._garbage = bytes(noise.replace(b"/", b"#"))
        self._unterminated = b"/" + bytes(noise.replace(b"/", b"#").replace(b"!", b"?"))[1:]

        self._master = -1
        self._slave = -1
        self.pty: str | None = None
        self._backlog = bytearray()
        self._tokens = 0.0
        self._last_pump_ns = 0
        self._slot = 0
        self._next_due_ns: int | None = None
        self._paused = False
        self._seq = 0
        self._remember = remember
        self._seq_by_digest: dict[bytes, int] = {}
        self._digests: deque[bytes] = deque()

        self._dropped = 0
        self._bytes_written = 0
        self._noise_written = 0
        self._noise_left = 0
        self._noise_kind = NoiseKind.GARBAGE
        self._noise_at = 0
        """Where in its block the burst of noise goes on (a paced burst comes in pieces)."""
        self._bad_crc = 0
        self._truncate = 0
        self._silent_until_ns = 0
        self._every: dict[str, int] = {}
        self._noise_bytes_each = 512
        self._unplug_request: tuple[float | None] | None = None
        self._replug_at_ns: int | None = None
        self._unplugs = 0
        self._last_plug_ns: int | None = None
        self._last_unplug_ns: int | None = None
        self.notify: Callable[[], None] = _nothing
        """Called after a fault or control request so the driving thread acts on it at once."""
        self.on_written: Callable[[int, int], None] | None = None
        """When set, called in the driving thread with (sequence number, time.monotonic_ns())
        as soon as a telegram's last byte has been written to the pty (latency measurements).
        It runs under the rig's lock: keep it short (append to a list)."""
        self._ends: deque[tuple[int, int]] = deque()
        self._lines: dict[bytes, bytes] = {}

    # --- faults and control (any thread) ---------------------------------------------------

    def corrupt_crc(self, count: int = 1) -> None:
        """Send the next `count` telegrams with a wrong CRC (CRC-less meters: no effect)."""
        with self._request():
            self._bad_crc += count

    def set_line(self, code: str, line: str) -> None:
        """From the next telegram on, send `line` instead of the template's line of OBIS
        `code` (a firmware update, a swapped meter); the CRC follows."""
        with self._request():
            self._lines = {**self._lines, code.encode("ascii"): line.encode("ascii")}

    def truncate(self, count: int = 1) -> None:
        """Cut the next `count` telegrams off halfway (the following '/' resynchronises)."""
        with self._request():
            self._truncate += count

    def inject_noise(self, nbytes: int, kind: NoiseKind = NoiseKind.GARBAGE) -> None:
        """Put `nbytes` of line noise between telegrams, generated as the line takes it."""
        with self._request():
            if kind is not self._noise_kind or not self._noise_left:
                self._noise_at = 0  # a new burst: from its block's start ('/' if unterminated)
            self._noise_left += nbytes
            self._noise_kind = kind

    def silence(self, seconds: float) -> None:
        """Send no telegrams for `seconds` (the port stays open)."""
        with self._request():
            self._silent_until_ns = time.monotonic_ns() + int(seconds * 1e9)

    def unplug(self, down_s: float | None = 1.0) -> None:
        """Close the pty (and remove the symlink); after `down_s` open a new one and re-point
        the symlink. None: stay unplugged until `replug()`."""
        with self._request():
            self._unplug_request = (down_s,)

    def replug(self) -> None:
        """Plug an unplugged meter back in now."""
        with self._request():
            self._replug_at_ns = time.monotonic_ns()

    def schedule(
        self,
        *,
        bad_crc_every: int = 0,
        truncate_every: int = 0,
        noise_every: int = 0,
        noise_bytes: int = 512,
    ) -> None:
        """Recurring faults: every Nth telegram gets a bad CRC, is cut short, or is preceded by
        `noise_bytes` of garbage (0 turns a fault off)."""
        with self._request():
            self._every = {"bad_crc": bad_crc_every, "truncate": truncate_every}
            self._every["noise"] = noise_every
            self._noise_bytes_each = noise_bytes

    def set_rate(self, rate: float | str | None, *, line_pacing: bool | None = None) -> None:
        """Change the emission rate from the next slot on: telegrams per second, "line" (back
        to back) or None (the model's interval); `line_pacing` too, when given."""
        line_mode, period_ns = _rate_period(rate, self.model.interval_s)
        with self._request():
            self._line_mode, self._period_ns = line_mode, period_ns
            if line_pacing is not None:
                self.line_pacing = line_pacing
            self._next_due_ns = None
            self._tokens = 0.0
            self._last_pump_ns = time.monotonic_ns()

    def pause(self) -> None:
        """Stop emitting telegrams (bytes already queued still go out)."""
        with self._request():
            self._paused = True

    def resume(self) -> None:
        """Emit telegrams again, from the next slot on."""
        with self._request():
            self._paused = False
            self._next_due_ns = None

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """Change state under the lock, then let the driving thread know."""
        with self._lock:
            yield
        self.notify()

    # --- reading (any thread) ----------------------------------------------------------------

    @property
    def port(self) -> str | None:
        """The path the gateway should open: the symlink, else the current pty."""
        return str(self.link) if self.link is not None else self.pty

    def stats(self) -> MeterStats:
        """What the meter has done so far."""
        with self._lock:
            return MeterStats(
                variant=self.variant,
                port=self.port,
                pty=self.pty,
                plugged=self._master >= 0,
                telegrams=self._seq,
                dropped=self._dropped,
                bytes_written=self._bytes_written,
                noise_written=self._noise_written,
                noise_pending=self._noise_left,
                backlog=len(self._backlog),
                unplugs=self._unplugs,
                last_plug_monotonic_ns=self._last_plug_ns,
                last_unplug_monotonic_ns=self._last_unplug_ns,
            )

    def sequence_of(self, raw: bytes) -> int | None:
        """The sequence number (1, 2, ...) of a telegram this meter sent, as the gateway framed
        it (parity stripped); None if unknown or long forgotten."""
        with self._lock:
            return self._seq_by_digest.get(_digest(raw))

    def meter_time(self, slot: int) -> datetime:
        """The meter time telegram slot `slot` carries."""
        return self.start_time + timedelta(seconds=slot * self.model.interval_s)

    # --- the pty (rig thread) -----------------------------------------------------------------

    def plug(self) -> None:
        """Open a new pty pair and point the symlink at it."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.pty = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.pty, tmp)
            os.replace(tmp, self.link)
        self._backlog.clear()
        self._ends.clear()
        self._tokens = 0.0
        now = time.monotonic_ns()
        self._last_pump_ns = now
        self._last_plug_ns = now
        self._replug_at_ns = None

    def close(self) -> None:
        """Remove the symlink and close both pty ends: the gateway sees an unplugged device."""
        if self.link is not None and self.link.is_symlink():
            self.link.unlink(missing_ok=True)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        self.pty = None
        self._backlog.clear()
        self._ends.clear()

    @property
    def master_fd(self) -> int:
        """The pty master descriptor (-1 while unplugged)."""
        return self._master

    # --- the rig thread's work ------------------------------------------------------------------

    def service(self, now_ns: int) -> int | None:
        """Do what is due at `now_ns`; return when next to come back (None: only on writability)."""
        request = self._unplug_request
        if request is not None:
            self._unplug_request = None
            if self._master >= 0:
                self._last_unplug_ns = time.monotonic_ns()
                self.close()
                self._unplugs += 1
            down_s = request[0]
            self._replug_at_ns = None if down_s is None else now_ns + int(down_s * 1e9)
        if self._master < 0:
            if self._replug_at_ns is not None and now_ns >= self._replug_at_ns:
                self.plug()
            else:
                self._skip_due(now_ns)
                return self._replug_at_ns
        wake = self._emit_due(now_ns)
        self._pump(now_ns)
        if self.wants_write:
            if self.line_pacing:
                return now_ns + 10_000_000 if wake is None else min(wake, now_ns + 10_000_000)
            return wake  # the rig polls the master for writability meanwhile
        return wake

    @property
    def wants_write(self) -> bool:
        """Whether the meter has bytes waiting for the pty to take them."""
        if self._master < 0:
            return False
        return bool(self._backlog or self._noise_left) or (self._line_mode and not self._paused)

    def _emit_due(self, now_ns: int) -> int | None:
        """Queue the telegrams due by now; return when the next is due."""
        if self._paused:
            return None
        if self._line_mode:
            while len(self._backlog) < _LINE_REFILL:
                self._emit_slot(now_ns)
            return None
        if self._next_due_ns is None:
            self._next_due_ns = now_ns
        if now_ns - self._next_due_ns > 3 * self._period_ns + 1_000_000_000:
            self._next_due_ns = now_ns  # far behind (a stall): carry on, no burst
        while now_ns >= self._next_due_ns:
            self._emit_slot(now_ns)
            self._next_due_ns += self._period_ns
        return self._next_due_ns

    def _skip_due(self, now_ns: int) -> None:
        """While unplugged the meter runs on: its due slots pass unsent."""
        due = self._next_due_ns
        if self._paused or self._line_mode or due is None or now_ns < due:
            return
        missed = (now_ns - due) // self._period_ns + 1
        self._slot += missed
        self._next_due_ns = due + missed * self._period_ns

    def _emit_slot(self, now_ns: int) -> None:
        """Render the current slot's telegram onto the line (or skip it: silence, full)."""
        slot = self._slot
        self._slot += 1
        if now_ns < self._silent_until_ns:
            return
        if len(self._backlog) > self.backlog_limit:
            self._dropped += 1
            return
        n = self._seq + 1
        every = self._every
        cut = self._truncate > 0 or _hits(every.get("truncate", 0), n)
        bad = not cut and (self._bad_crc > 0 or _hits(every.get("bad_crc", 0), n))
        if _hits(every.get("noise", 0), n):
            if self._noise_kind is not NoiseKind.GARBAGE:
                self._noise_at = 0
            self._noise_left += self._noise_bytes_each
            self._noise_kind = NoiseKind.GARBAGE
            self._feed_noise(self._noise_bytes_each)
        raw = self.model.template.render(slot, self.meter_time(slot), bad_crc=bad, swap=self._lines)
        if bad and self._bad_crc > 0:
            self._bad_crc -= 1
        self._seq = n
        self._remember_seq(raw, n)
        if cut:
            if self._truncate > 0:
                self._truncate -= 1
            raw = raw[: max(2, raw.rfind(b"!") // 2)]
        if self.model.seven_e_one:
            raw = raw.translate(EVEN_PARITY)
        if not self._backlog and self.line_pacing:
            # The line was idle: it earned no credit meanwhile. A UART sends a telegram's
            # first byte at the line's pace like every other (no burst at a frame's start).
            self._tokens = 0.0
            self._last_pump_ns = now_ns
        self._backlog += raw
        if self.on_written is not None:
            self._ends.append((self._bytes_written + len(self._backlog), n))

    def _remember_seq(self, raw: bytes, seq: int) -> None:
        """Keep a bounded map from telegram digest to sequence number."""
        key = _digest(raw)
        self._seq_by_digest[key] = seq
        self._digests.append(key)
        if len(self._digests) > self._remember:
            old = self._digests.popleft()
            if self._seq_by_digest.get(old, 0) <= seq - self._remember:
                del self._seq_by_digest[old]

    def _feed_noise(self, limit: int) -> None:
        """Move up to `limit` bytes of pending noise onto the line, going on where the burst's
        last piece stopped: a paced unterminated burst stays one run after its one '/'."""
        block = self._unterminated if self._noise_kind is NoiseKind.UNTERMINATED else self._garbage
        start = self._noise_at % len(block)
        size = min(self._noise_left, limit, len(block) - start)
        if size <= 0:
            return
        self._backlog += block[start : start + size]
        self._noise_at = start + size
        self._noise_left -= size
        self._noise_written += size

    def _pump(self, now_ns: int) -> None:
        """Write what the line allows (paced at the line rate, or as fast as the pty takes)."""
        if self._noise_left:
            chunk = 1024 if self.line_pacing else 65536
            if len(self._backlog) < chunk:
                self._feed_noise(chunk)
        if not self._backlog:
            self._last_pump_ns = now_ns
            return
        if self.line_pacing:
            rate = self.model.line_bytes_per_s
            elapsed = (now_ns - self._last_pump_ns) / 1e9
            self._tokens = min(self._tokens + elapsed * rate, max(rate * _PACING_BURST_S, 256))
            budget = int(self._tokens)
        else:
            budget = len(self._backlog)
        self._last_pump_ns = now_ns
        size = min(len(self._backlog), budget, 65536)
        if size <= 0:
            return
        try:
            written = os.write(self._master, self._backlog[:size])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # nobody on the slave side right now; try again later
        del self._backlog[:written]
        self._bytes_written += written
        if self.line_pacing:
            self._tokens -= written
        if self._ends:
            self._report_written()

    def _report_written(self) -> None:
        """Tell `on_written` about every telegram whose last byte is now on the pty."""
        hook, ends, done = self.on_written, self._ends, self._bytes_written
        now = time.monotonic_ns()
        while ends and ends[0][0] <= done:
            seq = ends.popleft()[1]
            if hook is not None:
                hook(seq, now)


def _rate_period(rate: float | str | None, interval_s: float) -> tuple[bool, int]:
    """(line mode, period in ns) for a rate: telegrams per second, "line", or None."""
    if rate == "line":
        return True, 0
    if rate is None:
        return False, int(interval_s * 1e9)
    if float(rate) <= 0:
        raise ValueError(f"rate must be positive or 'line', not {rate!r}")
    return False, int(1.0 / float(rate) * 1e9)


def _nothing() -> None:
    """No driving thread to notify."""


def _hits(every: int, n: int) -> bool:
    """Whether telegram number n is one of every `every`th (0: never)."""
    return every > 0 and n % every == 0


def _digest(raw: bytes) -> bytes:
    """A short digest identifying a telegram's bytes."""
    return hashlib.blake2b(raw, digest_size=8).digest()
