"""Port health, driven by a fake clock: states, interval learning, counters, jitter."""

import json

import pytest

from gateway import corpus
from gateway.mux import FaultKind, HealthState, IntervalSource, PortHealth
from gateway.mux.health import HOST_KEYS, interval_from_telegram
from gateway.timefmt import rfc3339_utc

S = 1_000_000_000  # one second in nanoseconds
WALL0 = 1_790_000_000 * S

V5 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5_TWO_MBUS").read()
V42 = corpus.entry("dsmrreader_dsmr-reader__test_kaifa_dsmr42").read()
FLUVIUS = corpus.entry("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT").read()
V22 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V2_2").read()
SWEDEN = corpus.entry("dsmrreader_dsmr-reader__test_sweden_kamstrup").read()


def _telegram(h: PortHealth, t: int, raw: bytes = V5, crc_ok: bool | None = True) -> object:
    """Feed one frame at time t (ns)."""
    return h.telegram(crc_ok=crc_ok, raw=raw, monotonic_ns=t, wall_ns=WALL0 + t)


def test_a_new_port_is_down_until_opened_then_up() -> None:
    """Before opening the port is down; opening makes it up (the benefit of the doubt)."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    assert h.state is HealthState.DOWN
    assert h.opened(1 * S) is HealthState.UP
    assert h.tick(3 * S) is None  # 2 s after opening: not yet 3 intervals


def test_no_telegram_for_three_intervals_is_silent_and_a_telegram_brings_it_up() -> None:
    """Up -> silent after 3 expected intervals without a valid telegram; a telegram -> up."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    h.opened(0)
    _telegram(h, 1 * S)
    assert h.tick(int(3.9 * S)) is None
    assert h.tick(4 * S) is HealthState.SILENT
    assert h.tick(5 * S) is None  # no repeated transition
    assert h.quiet_s(5 * S) == pytest.approx(4.0)
    assert _telegram(h, 6 * S) is HealthState.UP
    assert h.state is HealthState.UP


def test_crc_errors_do_not_keep_a_port_up() -> None:
    """Frames with a bad CRC are counted but are not telegrams."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    h.opened(0)
    for t in range(1, 4):
        _telegram(h, t * S, crc_ok=False)
    assert h.tick(3 * S) is HealthState.SILENT
    assert h.counters.crc_errors == 3 and h.counters.telegrams == 0


def test_older_specs_wait_thirty_seconds_before_silent() -> None:
    """DSMR 4 meters send every 10 s: silent only after 30 s."""
    h = PortHealth("m", url="/dev/x", spec="V4", now_ns=0)
    h.opened(0)
    assert h.interval_s == 10.0 and h.interval_source is IntervalSource.SPEC
    assert h.tick(29 * S) is None
    assert h.tick(30 * S) is HealthState.SILENT


def test_lost_and_open_failure_are_down_and_reconnects_count_reopenings() -> None:
    """Losing the port or failing to open it is down; a reopening after a loss counts."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    assert h.open_failed(0, "no such file") is None  # already down
    h.opened(1 * S)
    assert h.lost(2 * S, "EOF") is HealthState.DOWN
    assert h.tick(100 * S) is None  # down ports do not go silent
    h.open_failed(3 * S, "no such file")
    h.opened(4 * S)
    c = h.counters
    assert (c.reconnects, c.open_failures) == (1, 2)
    assert h.snapshot(5 * S).last_error is None
    h.closed(6 * S)
    assert h.state is HealthState.DOWN


@pytest.mark.parametrize(
    "raw,has_crc,expected",
    [
        (V5, True, 1.0),
        (FLUVIUS, True, 1.0),
        (V42, True, 10.0),
        (V22, False, 10.0),
        (SWEDEN, True, None),
    ],
)
def test_interval_from_the_telegram_version(raw: bytes, has_crc: bool, expected: float) -> None:
    """Version 5x (NL) or 5xxxx (BE) says 1 s, older or CRC-less says 10 s, else unknown."""
    assert interval_from_telegram(raw, has_crc) == expected


def test_auto_learns_the_interval_from_the_version_line() -> None:
    """An 'auto' port assumes 1 s, then takes 10 s from a DSMR 4.2 telegram."""
    h = PortHealth("m", url="/dev/x", spec="auto", now_ns=0)
    h.opened(0)
    assert (h.interval_s, h.interval_source) == (1.0, IntervalSource.DEFAULT)
    _telegram(h, 1 * S, raw=V42)
    assert (h.interval_s, h.interval_source) == (10.0, IntervalSource.TELEGRAM)
    assert h.tick(25 * S) is None


def test_auto_without_a_version_learns_from_the_observed_intervals() -> None:
    """A meter that never says its version: the median observed interval decides."""
    h = PortHealth("m", url="/dev/x", spec="auto", now_ns=0)
    h.opened(0)
    for t in (0, 10, 20):
        _telegram(h, t * S, raw=SWEDEN)
    assert (h.interval_s, h.interval_source) == (10.0, IntervalSource.OBSERVED)


def test_configured_interval_wins() -> None:
    """An explicit interval beats the spec and the telegrams."""
    h = PortHealth("m", url="/dev/x", spec="V5", interval_s=2.5, now_ns=0)
    _telegram(h, 0, raw=V42)
    assert (h.interval_s, h.interval_source) == (2.5, IntervalSource.CONFIG)
    h.reconfigure(url="/dev/y", spec="V4", interval_s=None)
    assert (h.interval_s, h.interval_source, h.url) == (10.0, IntervalSource.SPEC, "/dev/y")


def test_jitter_measures_deviation_from_the_period_and_skips_outages() -> None:
    """Mean and p95 absolute deviation from the period; gaps across a loss are left out."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    h.opened(0)
    t = 0
    for offset_ms in [0, 10, -10, 20, -20, 0]:
        t += S + offset_ms * 1_000_000
        _telegram(h, t)
    h.lost(t + S, "EOF")
    h.opened(t + 50 * S)
    _telegram(h, t + 51 * S)  # first after the reopening: no interval
    j = h.jitter()
    assert j.samples == 5
    # intervals: 1.010, 0.990, 1.020, 0.980, 1.000 s
    assert j.mean_abs_deviation_ms == pytest.approx((10 + 10 + 20 + 20 + 0) / 5)
    assert j.max_abs_deviation_ms == pytest.approx(20)
    assert j.p95_abs_deviation_ms == pytest.approx(20)
    assert j.mean_interval_s == pytest.approx(1.0, abs=0.01)


def test_no_jitter_without_two_telegrams() -> None:
    """With fewer than two telegrams there is nothing to say about jitter."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    h.opened(0)
    _telegram(h, S)
    assert h.jitter().samples == 0 and h.jitter().mean_abs_deviation_ms is None


def test_counters_for_drops_bytes_noise_and_consumer_errors() -> None:
    """Every counter the status table shows moves with what it counts."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    h.dropped("oversize")
    h.dropped("truncated")
    h.dropped("truncated")
    h.received(100, 7)
    h.received(0, 0)
    h.consumer_error()
    c = h.counters
    assert (c.oversize, c.truncated, c.bytes_in, c.noise_bytes, c.consumer_errors) == (
        1,
        2,
        100,
        7,
        1,
    )
    assert c.reads == 2


def test_silent_due_is_when_tick_would_call_the_port_silent() -> None:
    """The reader's housekeeping wakes at this time: 3 intervals after opening or the last
    telegram; none while down or silent."""
    h = PortHealth("m", url="/dev/x", spec="V5", now_ns=0)
    assert h.silent_due_ns() is None
    h.opened(10 * S)
    assert h.silent_due_ns() == 13 * S
    _telegram(h, 12 * S)
    assert h.silent_due_ns() == 15 * S
    assert h.tick(15 * S - 1) is None
    assert h.tick(15 * S) is HealthState.SILENT
    assert h.silent_due_ns() is None


def test_snapshot_is_frozen_and_its_dict_is_json_for_the_status_table() -> None:
    """The snapshot serialises to flat JSON with the keys `p1-gateway status` reads."""
    h = PortHealth("fluvius-t211", url="/dev/x", spec="BELGIUM_FLUVIUS", now_ns=0)
    h.opened(0)
    _telegram(h, 1 * S, raw=FLUVIUS)
    _telegram(h, 2 * S + 5_000_000, raw=FLUVIUS)
    snap = h.snapshot(3 * S)
    with pytest.raises(AttributeError):
        snap.state = HealthState.DOWN  # type: ignore[misc]
    d = json.loads(json.dumps(snap.to_dict()))
    assert d["state"] == "up"
    assert d["last_telegram_at"] == rfc3339_utc(WALL0 + 2 * S + 5_000_000)
    assert d["last_telegram_age_s"] == pytest.approx(0.995)
    assert d["jitter_ms"] == pytest.approx(5.0)
    for key in ("telegrams", "crc_errors", "oversize", "noise_bytes", "reconnects"):
        assert key in d
    assert d["telegrams"] == 2


def test_the_public_dict_names_nothing_of_the_host_but_the_fault_category() -> None:
    """The public health leaves out the device path and the error's text; it says why the
    port is down as a category. The full dict (the status file's) keeps everything."""
    path = "/dev/serial/by-path/platform-3f980000.usb-usb-0:1.2:1.0-port0"
    h = PortHealth("m", url=path, spec="V5", now_ns=0)
    h.opened(0)
    h.lost(S, f"read failed: {path}: Input/output error (errno 5)", missing=True)
    snap = h.snapshot(2 * S)
    assert snap.fault is FaultKind.UNPLUGGED
    full, public = snap.to_dict(), snap.to_public_dict()
    assert full["port"] == path and path in full["last_error"] and full["error"] == "unplugged"
    assert path not in json.dumps(public) and not set(HOST_KEYS) & set(public)
    assert public == {k: v for k, v in full.items() if k not in HOST_KEYS}
    assert public["error"] == "unplugged" and public["state"] == "down"
    h.open_failed(3 * S, f"cannot open {path}: Device or resource busy (errno 16)")
    assert h.snapshot(3 * S).to_public_dict()["error"] == "cannot open"
    h.opened(4 * S)
    assert h.snapshot(4 * S).to_public_dict()["error"] is None


def test_rfc3339_keeps_microseconds_in_utc() -> None:
    """Wall times print as RFC 3339 UTC with microseconds."""
    assert rfc3339_utc(1_795_881_792_123_456_789) == "2026-11-28T16:03:12.123456Z"
