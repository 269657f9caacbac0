"""`[schedule] source = "mqtt"`: the daemon follows the lab's schedule from a real mosquitto.

Against the devkit's broker (a test planner may write `p1/+/schedule`) for the gateway's rules:
refused versions, a SIGHUP, a restart without broker; against the central broker with the
dynamic security plugin for the whole way: `p1-gateway lab book` with fractional hours, and the
holder's telegrams starting and stopping with the slot.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.devkit.central import CentralBroker
from tests.daemon.harness import PASSWORDS, RIG_ID, GatewayHarness
from tests.lab.helpers import PLANNER, PLANNER_PASSWORD, YEAR, Lab
from tests.support.mosquitto import MosquittoBroker, MqttProbe, Received, wait_until

SCHEDULE = f"p1/{RIG_ID}/schedule"
APPLIED = f"p1/{RIG_ID}/schedule/applied"
#: The devkit broker's planner: writes the rigs' schedules, reads their answers.
PLANNER_ACL = f"user {PLANNER}\ntopic write p1/+/schedule\ntopic read p1/+/schedule/applied\n"

Slot = tuple[str, datetime, datetime]


def body(version: Any, *slots: Slot, rig: str = RIG_ID) -> bytes:
    """A schedule as the lab writes it."""
    items = [{"holder": h, "start": s.isoformat(), "end": e.isoformat()} for h, s, e in slots]
    return json.dumps({"rig": rig, "version": version, "slots": items}).encode()


def following(slots_file: list[Slot] | None = None) -> GatewayHarness:
    """A daemon with `[schedule] source = "mqtt"` on the devkit broker with a planner; its
    slots file (which it must not read) gives `beta` the rig now."""
    now = datetime.now(UTC)
    broker = MosquittoBroker(
        {**PASSWORDS, PLANNER: PLANNER_PASSWORD}, rigs=[RIG_ID], extra_acl=PLANNER_ACL
    )
    slots = slots_file or [("beta", now - timedelta(hours=1), now + timedelta(hours=2))]
    return GatewayHarness(slots=slots, schedule_source="mqtt", broker=broker)


class Planner:
    """The lab's side on the devkit broker: tells the rig its schedule, reads its answers."""

    def __init__(self, broker: MosquittoBroker):
        self.probe = MqttProbe(broker, PLANNER, PLANNER_PASSWORD, [APPLIED]).start()

    def tell(self, payload: bytes) -> None:
        """Publish the rig's schedule, retained, as the lab does."""
        assert self.probe.try_publish(SCHEDULE, payload, retain=True) == (0, False)

    def answers(self) -> list[dict[str, Any]]:
        """The rig's answers so far, in order."""
        return [json.loads(m.payload) for m in self.probe.snapshot(lambda t: t == APPLIED)]

    def wait_answer(self, wanted: dict[str, Any], timeout: float = 10.0) -> bool:
        """Wait until the rig's last answer is `wanted` (with `refused`: contains that text)."""

        def matches() -> bool:
            answers = self.answers()
            if not answers:
                return False
            last = answers[-1]
            if "refused" not in wanted:
                return last == wanted
            refused = str(last.get("refused"))
            return last.get("version") == wanted["version"] and wanted["refused"] in refused

        return wait_until(matches, timeout)


def telegrams(probe: MqttProbe, holder: str) -> list[Received]:
    """The holder's decoded telegrams a probe received."""
    prefix = f"p1/{RIG_ID}/slot/{holder}/"
    return probe.snapshot(lambda t: t.startswith(prefix) and t.endswith("/telegram"))


def more_telegrams(probe: MqttProbe, holder: str, timeout: float = 10.0) -> bool:
    """Wait until the holder gets telegrams beyond the ones it has now."""
    before = len(telegrams(probe, holder))
    return wait_until(lambda: len(telegrams(probe, holder)) >= before + 2, timeout)


def test_refused_versions_and_a_sighup_leave_the_running_schedule() -> None:
    """A version is applied and answered; a bad holder, an overlap and a lower version are
    refused with the reason and change nothing; a SIGHUP (its slots file giving another holder
    the rig, its [schedule] source changed) keeps the broker's schedule."""
    now = datetime.now(UTC)
    day = (now - timedelta(hours=1), now + timedelta(hours=2))
    with following() as h:
        planner = Planner(h.broker)
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        beta = h.probe("beta", ["p1/#"])
        assert planner.wait_answer({"version": None}), planner.answers()  # nothing kept yet
        planner.tell(body(2, ("acme", *day)))
        assert planner.wait_answer({"version": 2}), planner.answers()
        assert more_telegrams(acme, "acme"), h.log()[-2000:]
        assert h.status()["schedule"] == {
            "source": "mqtt",
            "version": 2,
            "refused": None,
            "error": None,
        }

        planner.tell(body(3, ("Bad Name", *day)))
        assert planner.wait_answer({"version": 3, "refused": "slot[0].holder"}), planner.answers()
        overlap = [("acme", day[0], now + timedelta(hours=1)), ("beta", now, day[1])]
        planner.tell(body(4, *overlap))
        assert planner.wait_answer({"version": 4, "refused": "overlaps"}), planner.answers()
        planner.tell(body(1, ("beta", *day)))  # lower: answered with the applied version
        lower = "version 1 is lower than the applied version 2"
        assert planner.wait_answer({"version": 2, "refused": lower}), planner.answers()
        planner.tell(body(5, ("acme", *day), rig="rig-b"))
        assert planner.wait_answer({"version": 5, "refused": "not this rig"}), planner.answers()
        assert wait_until(lambda: "not this rig" in str(h.status()["schedule"]["refused"]), 5)
        assert h.status()["schedule"]["version"] == 2
        assert more_telegrams(acme, "acme")  # still routed by version 2
        refusals = [e for e in h.log_events() if "refused" in str(e.get("event"))]
        assert len(refusals) == 4, refusals

        config = h.config.read_text().replace('source = "mqtt"', 'source = "file"')
        h.config.write_text(config)
        h.signal(signal.SIGHUP)
        assert wait_until(lambda: h.last_reload_ok() is not None, 10)
        reload = h.status()["config"]["last_reload"]
        assert reload["ok"] and reload["restart_needed"] == ["schedule"], reload
        assert more_telegrams(acme, "acme")
        assert h.status()["schedule"]["source"] == "mqtt"
        assert h.status()["schedule"]["version"] == 2
        assert telegrams(beta, "beta") == []  # the slots file was never read
        assert len(planner.answers()) == 6  # nothing answered again: nothing came
        planner.probe.stop()
        acme.stop()
        beta.stop()


def spooled_topics(spool: Path) -> set[str]:
    """The topics of the messages waiting in a spool, read from outside."""
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return {str(t) for (t,) in db.execute("SELECT topic FROM spool")}
    finally:
        db.close()


def test_a_restart_while_the_broker_is_away_routes_by_the_kept_schedule() -> None:
    """The schedule applied is kept on disk; the daemon restarted without broker routes by
    it (the holder's telegrams wait in the spool), and they arrive when the broker is back."""
    now = datetime.now(UTC)
    with following() as h:
        planner = Planner(h.broker)
        payload = body(7, ("acme", now - timedelta(minutes=1), now + timedelta(hours=1)))
        planner.tell(payload)
        assert planner.wait_answer({"version": 7}), planner.answers()
        planner.probe.stop()
        kept = h.dir / "spool" / "schedule.json"
        assert kept.read_bytes() == payload
        assert h.stop_daemon()[0] == 0

        h.broker.kill()
        for path in h.broker.state_dir.iterdir():  # nothing retained when it comes back
            path.unlink()
        h.start_daemon()

        def routed_to_acme() -> bool:
            topics = spooled_topics(h.dir / "spool" / "spool.sqlite3")
            return any(t.startswith(f"p1/{RIG_ID}/slot/acme/") for t in topics)

        assert wait_until(routed_to_acme, 10), h.log()[-2000:]
        status = h.status()
        assert status["schedule"]["version"] == 7 and status["slot"]["holder"] == "acme"
        assert not status["broker"]["connected"]

        h.broker.start()
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        assert more_telegrams(acme, "acme", 15), h.log()[-2000:]
        answer = MqttProbe(h.broker, PLANNER, PLANNER_PASSWORD, [APPLIED]).start()
        assert answer.wait_for(lambda m: bool(m), 5)
        assert json.loads(answer.snapshot()[-1].payload) == {"version": 7}  # said again
        answer.stop()
        acme.stop()


def test_a_booking_in_the_lab_starts_and_stops_the_holders_telegrams(tmp_path: Path) -> None:
    """The whole way, on the central broker with the plugin: `lab rigs add` and `testers
    add`, the gateway logs in as its rig and follows its schedule; `lab book` with fractional
    hours: the tester's session starts and ends with the booked slot, every telegram inside."""
    central = CentralBroker(PLANNER, PLANNER_PASSWORD)
    central.start()
    lab = Lab(tmp_path, central.port, slot_hours=0.001, turnover_hours=0, notice_days=0)
    password = lab.ok("rigs", "add", RIG_ID).last_line
    code = lab.ok("testers", "add", "acme", "--until", f"{YEAR}-12-31").last_line
    h = GatewayHarness(slots=[], schedule_source="mqtt", broker=central, rig_password=password)
    with h:
        acme = MqttProbe(central, "acme", code, [f"p1/{RIG_ID}/slot/acme/#"]).start()
        start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        booked = lab.ok("book", "acme", "--rig", RIG_ID, "--start", start.isoformat()).out
        assert booked.startswith(f"booked 1 {RIG_ID}"), booked

        def marker(event: str) -> dict[str, Any] | None:
            for m in acme.snapshot(lambda t: t.endswith("/session")):
                data = json.loads(m.payload)
                if data["event"] == event:
                    return dict(data)
            return None

        assert wait_until(lambda: marker("end") is not None, 20), h.log()[-3000:]
        begin, end = marker("start"), marker("end")
        assert begin is not None and end is not None
        slot = begin["slot"]
        assert datetime.fromisoformat(slot["start"]) == start
        assert datetime.fromisoformat(slot["end"]) == start + timedelta(seconds=3.6)
        kinds = [m.topic.rsplit("/", 1)[1] for m in acme.snapshot()]
        assert kinds[0] == "schedule" and "session" in kinds
        first, last = kinds.index("session"), len(kinds) - 1 - kinds[::-1].index("session")
        inside = [json.loads(m.payload) for m in telegrams(acme, "acme")]
        assert inside and "telegram" in kinds[first:last]
        assert "telegram" not in kinds[:first] and "telegram" not in kinds[last:]
        for data in inside:
            at = datetime.fromisoformat(data["received_at"])
            assert datetime.fromisoformat(slot["start"]) <= at < datetime.fromisoformat(slot["end"])
        rigs = {line.split()[0]: line.split() for line in lab.ok("rigs", "list").out.splitlines()}
        assert rigs[RIG_ID][1:4] == ["2", "2", "2"], rigs  # version, told, applied
        acme.stop()
