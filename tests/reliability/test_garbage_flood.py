"""A garbage flood on one port: memory stays bounded, the other ports lose nothing.

The flooded meter writes megabytes of line noise between its telegrams, as fast as the pty
takes it: half plain garbage (never a '/': all counted as noise), half "unterminated" frames
(a '/' and 64 KiB without '!' or '/': each outgrows the framer's 16 KiB bound and goes to the
holder as oversize evidence, its first 16 KiB).
The gateway's memory is read from /proc/PID/status before and after (VmRSS, and VmHWM, the
peak): it must not grow with the size of the flood.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.sim import NoiseKind
from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    first_received,
    models,
    record,
    soak_setting,
    wait_flowing,
)
from tests.support.mosquitto import wait_until

#: Growth of the daemon's peak RSS allowed over its RSS before the flood, whatever its size.
RSS_GROWTH_LIMIT_KB = 24 * 1024


#: The flood is fed in bursts of this size, spread over the flood's duration.
BURST = 256 * 1024


def flood(megabytes: float, spread_s: float) -> dict[str, Any]:
    """Flood the first of three ports with `megabytes` of noise over about `spread_s` seconds,
    while all three keep sending telegrams; return the figures."""
    with FaultHarness(models(3), rate=2.0, line_pacing=False) as h:
        tester = h.tester()
        ledger = Ledger(h, tester)
        flooded, *others = h.variants
        assert wait_flowing(ledger, h.variants, 3, 60), h.log()[-3000:]
        first = first_received(ledger, h.variants)
        before = h.memory_kb()
        meter = h.rig.meter(flooded)
        start_stats = meter.stats()
        bytes_in_before = _port(h, flooded).get("bytes_in", 0)
        total = int(megabytes * 1024 * 1024)
        bursts = total // BURST
        start = time.monotonic()
        for i in range(bursts):
            kind = NoiseKind.GARBAGE if i < bursts // 2 else NoiseKind.UNTERMINATED
            # one burst at a time: the simulator applies the latest kind to all pending noise
            assert wait_until(lambda: meter.stats().noise_pending == 0, 60), meter.stats()
            meter.inject_noise(BURST, kind)
            time.sleep(max(0.0, start + (i + 1) * spread_s / bursts - time.monotonic()))
        assert wait_until(lambda: meter.stats().noise_pending == 0, 60), meter.stats()
        assert h.rig.wait_drained(30)
        flood_s = time.monotonic() - start
        # The gateway has read every byte (its status counts them).
        assert wait_until(
            lambda: _port(h, flooded).get("bytes_in", 0) - bytes_in_before >= bursts * BURST, 60
        ), _port(h, flooded)
        end_stats = meter.stats()
        during_first, during_last = start_stats.telegrams + 1, end_stats.telegrams
        # The flooded port resumes: telegrams sent after the flood arrive.
        assert wait_until(
            lambda: any(n > during_last for n in ledger.update()[flooded].by_sim), 30
        ), "the flooded port did not resume"
        h.rig.pause()
        assert h.rig.wait_drained(10)
        last = {v: h.sent(v) for v in h.variants}
        wait_until(
            lambda: all(ledger.update().has_all(v, first[v], last[v]) for v in h.variants), 60
        )
        after = h.memory_kb()
        assert h.alive()
        port = _port(h, flooded)
        accounts = {v: ledger.account(v, first[v], last[v]) for v in h.variants}
        for v in h.variants:  # the framer resynchronises on every '/': none lost, flooded or not
            assert accounts[v]["lost"] == 0, (v, accounts[v])
        for v, acc in accounts.items():
            assert acc["foreign"] == 0 and not acc["conflicts"], (v, acc)
        growth = after["VmHWM"] - before["VmRSS"]
        assert growth <= RSS_GROWTH_LIMIT_KB, (before, after)
        received_during = sum(1 for n in ledger[flooded].by_sim if during_first <= n <= during_last)
        tester.stop()
        return {
            "flood_mb": megabytes,
            "noise_bytes_written": end_stats.noise_written - start_stats.noise_written,
            "flood_s": round(flood_s, 1),
            "rss_before_kb": before["VmRSS"],
            "peak_rss_before_kb": before["VmHWM"],
            "rss_after_kb": after["VmRSS"],
            "peak_rss_kb": after["VmHWM"],
            "peak_growth_kb": growth,
            "gateway_counted": {
                k: port.get(k) for k in ("noise_bytes", "oversize", "truncated", "bytes_in")
            },
            "flooded_port": {
                "sent_during_flood": during_last - during_first + 1,
                "received_during_flood": received_during,
                "not_sent_pty_full": end_stats.dropped - start_stats.dropped,
                "sent": accounts[flooded]["sent"],
                "received": accounts[flooded]["received"],
            },
            "other_ports": {
                v: {k: accounts[v][k] for k in ("sent", "received", "lost")} for v in others
            },
        }


def _port(h: FaultHarness, variant: str) -> dict[str, Any]:
    """A port's entry in the daemon's status file ({} if not there yet)."""
    return dict(h.safe_status().get("ports", {}).get(variant, {}))


def test_garbage_flood_keeps_memory_bounded_and_other_ports_whole() -> None:
    """16 MB of noise on one port: RSS bounded, others lose nothing, the port resumes."""
    figures = flood(16, spread_s=8.0)
    record("garbage_flood_quick", figures)
    assert figures["noise_bytes_written"] >= 15 * 1024 * 1024


@pytest.mark.slow
def test_100_mb_garbage_flood() -> None:
    """Soak: 100 MB of noise on one port; the same bounds as the quick form."""
    size = soak_setting("flood_mb", 100.0)
    figures = flood(size, spread_s=soak_setting("flood_s", 30.0))
    record("garbage_flood_soak", figures)
    assert figures["noise_bytes_written"] >= (size - 1) * 1024 * 1024
