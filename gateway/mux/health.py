"""Port health: a pure tracker per port, driven by the reader loop and an injected clock.

No IO and no clock of its own: every method takes the monotonic time (nanoseconds) it happens
at, so tests drive it with a fake clock. States:

- `up`: open, and a valid telegram within the last 3 expected intervals (a freshly opened port
  is up for its first 3 intervals: it gets the benefit of the doubt before it is called silent);
- `silent`: open, but no valid telegram (CRC ok, or CRC-less) for 3 expected intervals;
- `down`: cannot be opened, was lost (unplugged), or is closed.

The expected interval comes from, in this order: the port's configured `interval_s`; its spec
(DSMR 5 and Belgian e-MUCS send every 1 s, DSMR 2.2 to 4.x, Luxembourg, Sweden and Hungary
every 10 s); for "auto" and specs not known here, the telegrams themselves (version line
`1-3:0.2.8(5x)` or Belgian `0-0:96.1.4(5xxxx)` say 1 s, an older version or a CRC-less
telegram says 10 s); failing all that, the median of the observed intervals (nearest of 1 s and
10 s); and 1 s until anything is known.
"""

from __future__ import annotations

import enum
import itertools
import statistics
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from gateway.p1.specs import version_line
from gateway.timefmt import rfc3339_utc

SILENT_AFTER_INTERVALS = 3
FAST_INTERVAL_S = 1.0
SLOW_INTERVAL_S = 10.0
DEFAULT_INTERVAL_S = FAST_INTERVAL_S
JITTER_WINDOW = 64

#: The telegram period of the specs whose meters all send at one rate.
SPEC_INTERVALS_S: dict[str, float] = {
    "V2_2": SLOW_INTERVAL_S,
    "V3": SLOW_INTERVAL_S,
    "V4": SLOW_INTERVAL_S,
    "V5": FAST_INTERVAL_S,
    "BELGIUM_FLUVIUS": FAST_INTERVAL_S,
    "LUXEMBOURG_SMARTY": SLOW_INTERVAL_S,
    "SWEDEN": SLOW_INTERVAL_S,
    "EON_HUNGARY": SLOW_INTERVAL_S,
}


class HealthState(enum.Enum):
    """A port's health, as published and shown by `p1-gateway status`."""

    UP = "up"
    SILENT = "silent"
    DOWN = "down"


class FaultKind(enum.Enum):
    """Why a port is down, as a category that names nothing of the rig's host (the public
    health says this; the technician's status has the error's text too)."""

    UNPLUGGED = "unplugged"
    """The device is gone: its path is missing."""
    DISCONNECTED = "disconnected"
    """The open port failed (end of file, a read error) while its path is still there."""
    CANNOT_OPEN = "cannot open"
    """The port is there but does not open (busy, no permission, unreachable host)."""


def fault_of(*, lost: bool, missing: bool) -> FaultKind:
    """The category of a port's failure: lost while open, or failed to open; path missing."""
    if missing:
        return FaultKind.UNPLUGGED
    return FaultKind.DISCONNECTED if lost else FaultKind.CANNOT_OPEN


#: The health keys that name the rig's host (a device path or URL, an error text naming it):
#: the technician's status has them, the public health (`to_public_dict`) leaves them out.
HOST_KEYS = ("port", "last_error")


class IntervalSource(enum.Enum):
    """Where a port's expected telegram interval came from."""

    CONFIG = "config"
    SPEC = "spec"
    TELEGRAM = "telegram"
    OBSERVED = "observed"
    DEFAULT = "default"


def interval_from_telegram(raw: bytes, has_crc: bool) -> float | None:
    """The period a telegram's version says its meter sends at, or None if it does not say."""
    version = version_line(raw)
    if version is not None:
        return FAST_INTERVAL_S if version[1].startswith(b"5") else SLOW_INTERVAL_S
    if not has_crc:
        return SLOW_INTERVAL_S  # no CRC: DSMR 2.2 / 3.0
    return None


@dataclass(frozen=True, slots=True)
class HealthCounters:
    """A port's running totals since the multiplexer first saw its variant."""

    telegrams: int = 0
    """Valid telegrams: CRC ok, or CRC-less."""
    crc_errors: int = 0
    oversize: int = 0
    truncated: int = 0
    noise_bytes: int = 0
    bytes_in: int = 0
    reads: int = 0
    """Reads made from the port (bytes_in / reads: how much each wake-up brought)."""
    reconnects: int = 0
    """Successful reopenings after the port was lost."""
    open_failures: int = 0
    consumer_errors: int = 0
    """Events whose consumer raised (the reader loop went on)."""


#: HealthCounters' field names, in order (`to_dict` without dataclasses.asdict's deep copy).
_COUNTER_NAMES = tuple(f.name for f in fields(HealthCounters))


@dataclass(frozen=True, slots=True)
class JitterStats:
    """How far the intervals between consecutive telegrams stray from the meter's period."""

    samples: int
    mean_interval_s: float | None
    mean_abs_deviation_ms: float | None
    p95_abs_deviation_ms: float | None
    max_abs_deviation_ms: float | None


@dataclass(frozen=True, slots=True)
class PortHealthSnapshot:
    """A port's health at one moment: frozen, safe to hand to any thread."""

    variant: str
    url: str
    spec: str
    state: HealthState
    state_age_s: float
    expected_interval_s: float
    interval_source: IntervalSource
    last_telegram_wall_ns: int | None
    last_telegram_monotonic_ns: int | None
    last_telegram_age_s: float | None
    counters: HealthCounters
    jitter: JitterStats
    last_error: str | None
    fault: FaultKind | None = None
    """Why the port is down, as a category (None while it is not, or closed on purpose)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready flat mapping, the full view (the status file and its table)."""
        out: dict[str, Any] = {
            "variant": self.variant,
            "port": self.url,
            "spec": self.spec,
            "state": self.state.value,
            "state_age_s": round(self.state_age_s, 3),
            "last_telegram_at": (
                None
                if self.last_telegram_wall_ns is None
                else rfc3339_utc(self.last_telegram_wall_ns)
            ),
            "last_telegram_age_s": (
                None if self.last_telegram_age_s is None else round(self.last_telegram_age_s, 3)
            ),
            "expected_interval_s": self.expected_interval_s,
            "interval_source": self.interval_source.value,
        }
        counters = self.counters
        out.update((name, getattr(counters, name)) for name in _COUNTER_NAMES)
        jitter = self.jitter
        out["jitter_ms"] = _round(jitter.mean_abs_deviation_ms)
        out["jitter_p95_ms"] = _round(jitter.p95_abs_deviation_ms)
        out["jitter_max_ms"] = _round(jitter.max_abs_deviation_ms)
        out["jitter_samples"] = jitter.samples
        out["mean_interval_s"] = _round(jitter.mean_interval_s, 4)
        out["error"] = None if self.fault is None else self.fault.value
        out["last_error"] = self.last_error
        return out

    def to_public_dict(self) -> dict[str, Any]:
        """`to_dict` without what names the rig's host (`HOST_KEYS`): the public health."""
        out = self.to_dict()
        for key in HOST_KEYS:
            del out[key]
        return out


def _round(value: float | None, digits: int = 2) -> float | None:
    """Round for display; None stays None."""
    return None if value is None else round(value, digits)


class PortHealth:
    """The health of one port, fed by the reader loop; every method takes the time it happens."""

    def __init__(
        self,
        variant: str,
        *,
        url: str,
        spec: str = "auto",
        interval_s: float | None = None,
        now_ns: int = 0,
        jitter_window: int = JITTER_WINDOW,
    ) -> None:
        self.variant = variant
        self.state = HealthState.DOWN
        self._state_since = now_ns
        self._opened_at: int | None = None
        self._lost_since_open = False
        self._last_mono: int | None = None
        self._last_wall: int | None = None
        self._jitter_anchor: int | None = None
        self._intervals: deque[int] = deque(maxlen=jitter_window)
        self._last_error: str | None = None
        self._fault: FaultKind | None = None
        self._c: dict[str, int] = dict.fromkeys(HealthCounters.__dataclass_fields__, 0)
        self.url = url
        self.spec = spec
        self.interval_s = DEFAULT_INTERVAL_S
        self.interval_source = IntervalSource.DEFAULT
        self.reconfigure(url=url, spec=spec, interval_s=interval_s)

    # --- configuration -----------------------------------------------------------------

    def reconfigure(self, *, url: str, spec: str, interval_s: float | None) -> None:
        """Take a changed port configuration; counters and history stay."""
        self.url = url
        self.spec = spec
        if interval_s is not None:
            self._set_interval(interval_s, IntervalSource.CONFIG)
        elif spec in SPEC_INTERVALS_S:
            self._set_interval(SPEC_INTERVALS_S[spec], IntervalSource.SPEC)
        elif self.interval_source in (IntervalSource.CONFIG, IntervalSource.SPEC):
            self._set_interval(DEFAULT_INTERVAL_S, IntervalSource.DEFAULT)

    def _set_interval(self, interval_s: float, source: IntervalSource) -> None:
        """Adopt an expected interval and say where it came from."""
        self.interval_s = float(interval_s)
        self.interval_source = source

    # --- port life -------------------------------------------------------------------------

    def opened(self, now_ns: int) -> HealthState | None:
        """The port was opened; it is up from now on (silent if no telegram follows)."""
        if self._lost_since_open:
            self._c["reconnects"] += 1
        self._lost_since_open = False
        self._opened_at = now_ns
        self._jitter_anchor = None
        self._last_error = None
        self._fault = None
        return self._enter(HealthState.UP, now_ns)

    def open_failed(self, now_ns: int, error: str, *, missing: bool = False) -> HealthState | None:
        """An attempt to open the port failed (`missing`: its device path is not there)."""
        self._c["open_failures"] += 1
        self._last_error = error
        self._fault = fault_of(lost=False, missing=missing)
        return self._enter(HealthState.DOWN, now_ns)

    def lost(self, now_ns: int, error: str, *, missing: bool = False) -> HealthState | None:
        """The open port failed (unplugged, hung up, network server gone)."""
        self._lost_since_open = True
        self._last_error = error
        self._fault = fault_of(lost=True, missing=missing)
        return self._close(now_ns)

    def closed(self, now_ns: int) -> HealthState | None:
        """The port was closed on purpose (removed, changed, stopping): down, and no fault."""
        self._fault = None
        return self._close(now_ns)

    def _close(self, now_ns: int) -> HealthState | None:
        """Mark the port down and forget its open-time anchors."""
        self._opened_at = None
        self._jitter_anchor = None
        return self._enter(HealthState.DOWN, now_ns)

    # --- traffic -----------------------------------------------------------------------------

    def telegram(
        self, *, crc_ok: bool | None, raw: bytes, monotonic_ns: int, wall_ns: int
    ) -> HealthState | None:
        """A frame arrived; a valid one (CRC ok or CRC-less) counts as a telegram."""
        if crc_ok is False:
            self._c["crc_errors"] += 1
            return None
        self._c["telegrams"] += 1
        if self.interval_source in (IntervalSource.DEFAULT, IntervalSource.OBSERVED):
            learned = interval_from_telegram(raw, crc_ok is not None)
            if learned is not None:
                self._set_interval(learned, IntervalSource.TELEGRAM)
        anchor = self._jitter_anchor
        if anchor is not None:
            gap = monotonic_ns - anchor
            if gap > 0:
                self._intervals.append(gap)
                self._learn_from_observation()
        self._jitter_anchor = monotonic_ns
        self._last_mono = monotonic_ns
        self._last_wall = wall_ns
        if self.state is HealthState.SILENT:
            return self._enter(HealthState.UP, monotonic_ns)
        return None

    def _learn_from_observation(self) -> None:
        """With nothing better to go on, take the period from the median observed interval."""
        if self.interval_source not in (IntervalSource.DEFAULT, IntervalSource.OBSERVED):
            return
        if len(self._intervals) < 2:
            return
        median_s = statistics.median(itertools.islice(reversed(self._intervals), 8)) / 1e9
        # Nearest of the two rates on a log scale: the boundary is sqrt(1 * 10) ~ 3.16 s.
        guess = SLOW_INTERVAL_S if median_s > 3.16 else FAST_INTERVAL_S
        self._set_interval(guess, IntervalSource.OBSERVED)

    def dropped(self, reason: str) -> None:
        """The framer dropped a started frame: 'oversize' or 'truncated'."""
        key = "oversize" if reason == "oversize" else "truncated"
        self._c[key] += 1

    def received(self, nbytes: int, noise_bytes: int) -> None:
        """One read from the port: its bytes, and how many of them the framer counted as noise."""
        self._c["reads"] += 1
        self._c["bytes_in"] += nbytes
        self._c["noise_bytes"] += noise_bytes

    def consumer_error(self) -> None:
        """The consumer raised on one of this port's events."""
        self._c["consumer_errors"] += 1

    # --- time ---------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> HealthState | None:
        """Let time pass: an up port with no telegram for 3 intervals becomes silent."""
        due = self.silent_due_ns()
        if due is not None and now_ns >= due:
            return self._enter(HealthState.SILENT, now_ns)
        return None

    def silent_due_ns(self) -> int | None:
        """When `tick` would call the port silent if no telegram came first; None if it cannot."""
        if self.state is not HealthState.UP or self._opened_at is None:
            return None
        reference = self._opened_at
        if self._last_mono is not None and self._last_mono > reference:
            reference = self._last_mono
        return reference + round(SILENT_AFTER_INTERVALS * self.interval_s * 1e9)

    def quiet_s(self, now_ns: int) -> float:
        """Seconds since the last valid telegram, or since opening if none came since; 0 if shut."""
        if self._opened_at is None:
            return 0.0
        reference = self._opened_at
        if self._last_mono is not None and self._last_mono > reference:
            reference = self._last_mono
        return max(0, now_ns - reference) / 1e9

    def _enter(self, state: HealthState, now_ns: int) -> HealthState | None:
        """Move to `state`; return it when it is a change, None when it is not."""
        if state is self.state:
            return None
        self.state = state
        self._state_since = now_ns
        return state

    # --- reading ------------------------------------------------------------------------------

    @property
    def counters(self) -> HealthCounters:
        """The running totals, frozen."""
        return HealthCounters(**self._c)

    def jitter(self) -> JitterStats:
        """Interval statistics over the last window of telegram-to-telegram intervals.

        Intervals across an outage or a silence (3 periods or more) are left out: those are the
        state's business, not jitter.
        """
        period_ns = self.interval_s * 1e9
        limit = SILENT_AFTER_INTERVALS * period_ns
        gaps = [g for g in self._intervals if g < limit]
        if not gaps:
            return JitterStats(0, None, None, None, None)
        deviations = sorted(abs(g - period_ns) / 1e6 for g in gaps)
        p95_index = max(0, round(0.95 * len(deviations)) - 1)
        return JitterStats(
            samples=len(gaps),
            mean_interval_s=sum(gaps) / len(gaps) / 1e9,
            mean_abs_deviation_ms=sum(deviations) / len(deviations),
            p95_abs_deviation_ms=deviations[p95_index],
            max_abs_deviation_ms=deviations[-1],
        )

    def snapshot(self, now_ns: int) -> PortHealthSnapshot:
        """The port's health now, frozen."""
        return PortHealthSnapshot(
            variant=self.variant,
            url=self.url,
            spec=self.spec,
            state=self.state,
            state_age_s=max(0, now_ns - self._state_since) / 1e9,
            expected_interval_s=self.interval_s,
            interval_source=self.interval_source,
            last_telegram_wall_ns=self._last_wall,
            last_telegram_monotonic_ns=self._last_mono,
            last_telegram_age_s=(
                None if self._last_mono is None else max(0, now_ns - self._last_mono) / 1e9
            ),
            counters=self.counters,
            jitter=self.jitter(),
            last_error=self._last_error,
            fault=self._fault,
        )
