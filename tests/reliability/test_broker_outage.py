"""Broker outages under a live rig: the daemon spools, the tester gets every telegram after.

Promise (docs/reliability.md): every telegram the gateway read while the broker was away is
delivered after it returns, with its seq; nothing is lost, duplicates are possible.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    crash_broker,
    elapsed,
    first_received,
    models,
    record,
    soak_setting,
    stop_broker,
    wait_flowing,
)
from tests.support.mosquitto import wait_until


def broker_connected(h: FaultHarness) -> bool | None:
    """Whether the daemon says it is connected (None: status not readable now)."""
    value = h.safe_status().get("broker", {}).get("connected")
    return None if value is None else bool(value)


def outages(kinds: list[str], down_s: float, up_s: float, *, meters: int = 3) -> dict[str, Any]:
    """Run the broker outages `kinds` ("kill" or "term") on a live rig; return the figures."""
    with FaultHarness(models(meters), rate=5.0) as h:
        tester = h.tester()
        ledger = Ledger(h, tester)
        assert wait_flowing(ledger, h.variants, 5, 60), h.log()[-3000:]
        first = first_received(ledger, h.variants)
        cycles = []
        for kind in kinds:
            time.sleep(up_s)  # the stream runs with the broker up (scenario time, not a wait)
            how = crash_broker(h, ledger, h.broker) if kind == "kill" else stop_broker(h.broker)
            down_at = {v: h.sent(v) for v in h.variants}
            start = time.monotonic()
            assert wait_until(lambda: broker_connected(h) is False, 15)
            time.sleep(down_s)  # the outage itself
            backlog = h.safe_status().get("broker", {}).get("spooled")
            up_at = {v: h.sent(v) for v in h.variants}
            h.broker.start()
            restarted = time.monotonic()
            assert h.alive(), h.log()[-3000:]
            ok = ledger.wait_all({v: (first[v], up_at[v]) for v in h.variants}, 120)
            assert ok, {v: ledger.account(v, first[v], up_at[v])["missing"] for v in h.variants}
            cycles.append(
                {
                    **how,
                    "down_s": round(restarted - start, 1),
                    "sent_during_outage": sum(up_at[v] - down_at[v] for v in h.variants),
                    "spooled_at_restart": backlog,
                    "caught_up_after_restart_s": elapsed(restarted),
                }
            )
        h.rig.pause()
        assert h.rig.wait_drained(10)
        last = {v: h.sent(v) for v in h.variants}
        assert ledger.wait_all({v: (first[v], last[v]) for v in h.variants}, 60)
        assert wait_until(lambda: broker_connected(h) is True, 30)
        assert h.alive()
        accounts = {v: ledger.account(v, first[v], last[v]) for v in h.variants}
        for v, acc in accounts.items():
            assert acc["lost"] == 0 and acc["foreign"] == 0 and not acc["conflicts"], (v, acc)
            assert ledger.first_arrivals_in_order(v), f"{v}: first arrivals out of seq order"
            assert ledger.seq_follows_telegrams(v), f"{v}: a seq does not follow its telegram"
            assert ledger.telegram_twins_complete(v), f"{v}: raw and telegram differ"
        tester.stop()
        return {
            "outages": cycles,
            "sent": sum(a["sent"] for a in accounts.values()),
            "received": sum(a["received"] for a in accounts.values()),
            "duplicates": sum(a["raw_duplicates"] for a in accounts.values()),
            "lost": sum(a["lost"] for a in accounts.values()),
            "per_variant": {
                v: {k: a[k] for k in ("sent", "received", "lost")} for v, a in accounts.items()
            },
            "meters": len(h.variants),
            "rate_hz": h.rate,
        }


def test_broker_killed_mid_stream_for_10_s_loses_nothing() -> None:
    """kill -9 of the broker for ~10 s: every telegram arrives after, same seq, none lost."""
    figures = outages(["kill"], down_s=10.0, up_s=2.0)
    record("broker_outage_quick", figures)
    assert figures["lost"] == 0 and figures["received"] == figures["sent"]


@pytest.mark.slow
def test_repeated_long_broker_outages_lose_nothing() -> None:
    """Soak: outages of 30 s+ (SIGKILL and SIGTERM alternating), repeated; nothing lost."""
    count = int(soak_setting("outages", 4))
    kinds = ["kill" if i % 2 == 0 else "term" for i in range(count)]
    figures = outages(kinds, down_s=soak_setting("outage_s", 30.0), up_s=10.0)
    record("broker_outage_soak", figures)
    assert figures["lost"] == 0 and figures["received"] == figures["sent"]
