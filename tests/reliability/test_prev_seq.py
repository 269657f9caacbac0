"""Loss detection by prev_seq, as a tester does it, through a broker outage and a restart.

Promise (docs/testers.md): a message whose prev_seq is not the last seq received for its
variant in the session (over telegram and invalid, deduplicated on seq) means messages were
missed. A tester with a persistent session misses nothing through a broker outage and a clean
gateway restart: its chain never breaks. A tester away for 3 s without one misses messages:
its chain breaks there.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.daemon.harness import RIG_ID
from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    models,
    record,
    wait_flowing,
    wait_quiet,
)
from tests.support.mosquitto import Received, wait_until

TOPIC = f"p1/{RIG_ID}/slot/acme/#"


def chain_breaks(messages: list[Received]) -> dict[str, list[tuple[int, int | None]]]:
    """Per variant, the (seq, prev_seq) of each message whose prev_seq is not the last seq
    received before it (the first one received excepted: what came before is unknown)."""
    last: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    breaks: dict[str, list[tuple[int, int | None]]] = {}
    for m in messages:
        kind = m.topic.rsplit("/", 1)[1]
        if kind not in ("telegram", "invalid"):
            continue
        data = json.loads(m.payload)
        variant, seq, prev = data["variant"], data["seq"], data["prev_seq"]
        if (variant, seq) in seen:
            continue  # a redelivery
        seen.add((variant, seq))
        if variant in last and prev != last[variant]:
            breaks.setdefault(variant, []).append((seq, prev))
        last[variant] = seq
    return breaks


def counted(messages: list[Received], variants: list[str]) -> dict[str, int]:
    """Distinct telegrams and invalid frames received per variant."""
    keys = {
        (json.loads(m.payload)["variant"], json.loads(m.payload)["seq"])
        for m in messages
        if m.topic.endswith(("/telegram", "/invalid"))
    }
    return {v: len([k for k in keys if k[0] == v]) for v in variants}


def test_prev_seq_chain_holds_for_a_persistent_tester_and_breaks_for_one_away() -> None:
    """Broker SIGTERMed for 3 s, then the gateway restarted (SIGTERM): the persistent tester's
    chains never break; a tester without a session, away for 3 s, sees each chain break."""
    with FaultHarness(models(2), rate=5.0) as h:
        keeper = h.tester()
        ledger = Ledger(h, keeper)
        away = h.probe("acme", [TOPIC], client_id="acme-away")
        assert wait_flowing(ledger, h.variants, 3, 60), h.log()[-3000:]

        # The tester away for 3 s (no persistent session: what is sent meanwhile is lost to it).
        away.stop()
        time.sleep(3.0)
        back = h.probe("acme", [TOPIC], client_id="acme-away")
        assert wait_until(lambda: min(counted(back.snapshot(), h.variants).values()) >= 1, 15)

        # A broker outage, then a clean gateway restart.
        h.broker.terminate()
        time.sleep(3.0)
        h.broker.start()
        assert wait_flowing(ledger, h.variants, ledger_count(ledger, h.variants) + 3, 60)
        code, _ = h.stop_daemon()
        assert code == 0
        h.start_daemon()
        assert wait_flowing(ledger, h.variants, ledger_count(ledger, h.variants) + 3, 60)
        h.rig.pause()
        assert h.rig.wait_drained(10)
        assert wait_quiet(h, ledger), "the persistent tester never caught up"

        kept = keeper.snapshot()
        assert chain_breaks(kept) == {}, chain_breaks(kept)
        missed = chain_breaks(away.snapshot() + back.snapshot())
        for v in h.variants:  # each chain breaks where the tester came back
            first_back = next(
                json.loads(m.payload)["seq"]
                for m in back.snapshot()
                if m.topic.endswith(f"/{v}/telegram")
            )
            assert first_back in [seq for seq, _ in missed.get(v, [])], (v, missed)
        figures: dict[str, Any] = {
            "meters": len(h.variants),
            "rate_hz": h.rate,
            "persistent_received": counted(kept, h.variants),
            "persistent_breaks": 0,
            "away_breaks": {v: len(b) for v, b in missed.items()},
        }
        record("prev_seq_chain", figures)


def ledger_count(ledger: Ledger, variants: list[str]) -> int:
    """The fewest telegrams any variant has at the tester so far."""
    ledger.update()
    return min(len(ledger[v].by_sim) for v in variants)
