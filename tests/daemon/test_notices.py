"""Notices end to end: a real mosquitto, a virtual rig, the daemon as a process."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.sim.catalogue import catalogue
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe, wait_until

NOTICES = f"p1/{RIG_ID}/notice/#"
VARIANT = "fluvius-t211"
#: 180 days, the notices' message expiry.
EXPIRY_S = 180 * 24 * 3600


def notices_of(probe: MqttProbe) -> list[dict[str, Any]]:
    """The notices a probe received, parsed (one per topic: the last)."""
    found = {m.topic: m for m in probe.snapshot(lambda t: "/notice/" in t) if m.payload}
    return [json.loads(m.payload) for m in found.values()]


def observed_of(probe: MqttProbe) -> dict[str, Any] | None:
    """The variant's `observed` block in the last catalogue a probe received."""
    catalogues = probe.snapshot(lambda t: t == f"p1/{RIG_ID}/variants")
    if not catalogues:
        return None
    entries = json.loads(catalogues[-1].payload)["variants"]
    block = next(e for e in entries if e["id"] == VARIANT).get("observed")
    return dict(block) if block is not None else None


def test_a_firmware_update_gives_one_notice_and_a_restart_none() -> None:
    """A changed version line: one `firmware` notice with before and after, retained with its
    expiry, and the new observed block; a restart posts nothing; a second tester reads the
    notices but nothing of the holder's slot; a technician's edit gives one operator notice."""
    with GatewayHarness([catalogue()[VARIANT]]) as h:
        beta = h.probe("beta", ["p1/#"])
        assert wait_until(lambda: (observed_of(beta) or {}).get("firmware"), 20), h.log()
        assert observed_of(beta) == {
            **(observed_of(beta) or {}),
            "firmware": {"0-0:96.1.4": "50217"},
        }
        assert notices_of(beta) == []  # the first telegram is the baseline, not a change

        h.rig.meter(VARIANT).set_line("0-0:96.1.4", "0-0:96.1.4(50221)")
        assert wait_until(lambda: notices_of(beta), 15), h.log()
        assert wait_until(
            lambda: (observed_of(beta) or {}).get("firmware") == {"0-0:96.1.4": "50221"}, 10
        )
        time.sleep(3)  # three more telegrams with the new version: no more notices
        (notice,) = notices_of(beta)
        assert notice["kind"] == "firmware" and notice["variant"] == VARIANT
        assert notice["rig"] == RIG_ID and f"-{RIG_ID}-" in notice["id"]
        assert notice["before"] == {"0-0:96.1.4": "50217"}
        assert notice["after"] == {"0-0:96.1.4": "50221"}

        late = h.probe("acme", [NOTICES])  # a tester connecting later gets it, retained
        assert late.wait_for(lambda ms: any(m.retain for m in ms), 10)
        (kept,) = late.snapshot()
        assert kept.topic == f"p1/{RIG_ID}/notice/{notice['id']}"
        assert kept.expiry is not None and EXPIRY_S - 60 < kept.expiry <= EXPIRY_S

        code, _ = h.stop_daemon()
        assert code == 0
        seen = len(beta.snapshot(lambda t: t.endswith("/raw")))  # (beta holds no slot: 0)
        h.start_daemon()
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/{VARIANT}/raw"])
        assert acme.wait_for(lambda ms: len(ms) >= 3, 15), h.log()
        assert len(notices_of(beta)) == 1, "a restart posted a notice"
        assert len(beta.snapshot(lambda t: "/notice/" in t)) == 1

        text = h.variants_file.read_text()
        h.variants_file.write_text(text.replace("model = ", 'model = "T211-D" #', 1))
        assert wait_until(lambda: len(notices_of(beta)) == 2, 15), h.log()
        (operator,) = [n for n in notices_of(beta) if n["kind"] == "operator"]
        assert operator["variant"] == VARIANT and operator["after"] == {"model": "T211-D"}
        assert operator["id"] > notice["id"]
        assert not beta.snapshot(lambda t: "/slot/" in t) and seen == 0
