"""Each rig's schedule goes out retained with a rising version; what the rigs answer is read."""

from __future__ import annotations

import json
import sqlite3

from gateway.devkit.central import CentralBroker
from gateway.devkit.mosquitto import MqttProbe, Received, wait_until
from tests.lab.helpers import YEAR, Lab, retained

SCHEDULE = "p1/rig-a/schedule"


def set_up(lab: Lab) -> str:
    """rig-a and rig-b with accounts, tester acme; rig-a's password."""
    password = lab.ok("rigs", "add", "rig-a").last_line
    lab.ok("rigs", "add", "rig-b")
    lab.ok("testers", "add", "acme", "--until", f"{YEAR + 1}-12-31")
    return password


def schedules(probe: MqttProbe) -> list[Received]:
    """The schedules a rig's probe received, in order."""
    return probe.snapshot(lambda t: t == SCHEDULE)


def test_every_change_sends_the_rigs_whole_schedule_retained_with_a_rising_version(
    lab: Lab, central: CentralBroker
) -> None:
    """Book, extend, move, cancel: rig-a reads each whole schedule, retained, versions up."""
    password = set_up(lab)
    with MqttProbe(central, "rig-a", password, [SCHEDULE]) as rig:
        assert rig.wait_for(lambda m: len(schedules(rig)) == 1, 5)
        first = json.loads(schedules(rig)[0].payload)
        assert first == {"rig": "rig-a", "version": 1, "slots": []}  # `rigs add` told it
        lab.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
        lab.ok("extend", "1", "--days", "1")
        lab.ok("move", "1", "--start", f"{YEAR}-02-02T08:00")
        lab.ok("cancel", "1")
        assert rig.wait_for(lambda m: len(schedules(rig)) == 5, 5)
    bodies = [json.loads(m.payload) for m in schedules(rig)]
    assert [b["version"] for b in bodies] == [1, 2, 3, 4, 5]
    assert bodies[1] == {
        "rig": "rig-a",
        "version": 2,
        "slots": [
            {
                "holder": "acme",
                "start": f"{YEAR}-02-01T08:00:00+01:00",
                "end": f"{YEAR}-02-02T06:00:00+01:00",
            }
        ],
    }
    assert bodies[2]["slots"][0]["end"] == f"{YEAR}-02-03T06:00:00+01:00"
    assert bodies[3]["slots"][0]["start"] == f"{YEAR}-02-02T08:00:00+01:00"
    assert bodies[4]["slots"] == []
    assert retained(central, SCHEDULE) == bodies[4]  # what a rig connecting now reads


def test_only_the_affected_rig_is_told(lab: Lab, central: CentralBroker) -> None:
    """A booking on rig-b changes rig-b's version, not rig-a's."""
    set_up(lab)
    lab.ok("book", "acme", "--rig", "rig-b", "--start", f"{YEAR}-02-01T08:00")
    assert retained(central, "p1/rig-b/schedule")["version"] == 2  # type: ignore[index]
    assert retained(central, SCHEDULE)["version"] == 1  # type: ignore[index]


def test_the_lab_republishes_above_a_version_the_rig_applied(
    lab: Lab, central: CentralBroker
) -> None:
    """After a restore the rig has applied version 40: the lab tells it version 41, and
    `rigs list` shows what the rig applied, refused, and that it is connected."""
    password = set_up(lab)
    lab.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    with MqttProbe(central, "rig-a", password) as rig:  # the gateway's answers, faked
        rig.try_publish("p1/rig-a/schedule/applied", b'{"version": 40}', retain=True)
        rig.try_publish("p1/rig-a/bridge/state", b"1", retain=True)
    result = lab.ok("publish")
    assert "rig-a: told version 41 (applied 40)" in result.out
    assert "rig-b: up to date at version 1" in result.out
    body = retained(central, SCHEDULE)
    assert body is not None and body["version"] == 41 and len(body["slots"]) == 1
    assert "rig-a: up to date at version 41" in lab.ok("publish").out
    with MqttProbe(central, "rig-a", password) as rig:
        refusal = b'{"version": 41, "refused": "slot overlaps"}'
        rig.try_publish("p1/rig-a/schedule/applied", refusal, retain=True)
    rows = {line.split()[0]: line for line in lab.ok("rigs", "list").out.splitlines()}
    assert rows["rig-a"].split()[1:5] == ["41", "41", "41", "(refused:"]
    assert "slot overlaps" in rows["rig-a"] and rows["rig-a"].split()[-2:] == ["yes", "yes"]
    assert rows["rig-b"].split()[1:] == ["1", "1", "-", "?", "yes"]


def test_a_lab_without_broker_records_the_booking_and_the_next_command_tells(
    lab: Lab, central: CentralBroker
) -> None:
    """Broker down: the booking is recorded, stderr says the rigs are not told yet, and
    `lab publish` fails; broker back: the next command (any) tells rig-a."""
    set_up(lab)
    central.kill()
    result = lab("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    assert result.rc == 0 and result.out.startswith("booked 1 rig-a")
    assert "not told yet" in result.err
    assert lab("publish").rc == 1
    assert "not told yet" in lab.ok("list").err
    central.start()
    lab.ok("audit")
    body = retained(central, SCHEDULE)
    assert body is not None and [s["holder"] for s in body["slots"]] == ["acme"]
    with sqlite3.connect(lab.db) as db:
        assert db.execute("SELECT version = told FROM rigs WHERE name = 'rig-a'").fetchone()[0]


def test_a_schedule_the_broker_lost_is_told_again(lab: Lab, central: CentralBroker) -> None:
    """The central broker restarted without its retained schedules: the next command
    republishes rig-a's, above the version told before."""
    set_up(lab)
    lab.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    central.kill()  # nothing saved: the retained schedules are gone
    for path in central.state_dir.iterdir():
        path.unlink()
    central.start()
    assert retained(central, SCHEDULE) is None
    lab.ok("list")  # nothing pending in the store: `list` does not look at the broker
    assert "rig-a: told version 3" in lab.ok("publish").out
    body = retained(central, SCHEDULE)
    assert body is not None and body["version"] == 3 and len(body["slots"]) == 1


def test_the_schedule_holds_current_and_coming_slots_only(lab: Lab, central: CentralBroker) -> None:
    """A slot that has ended is not sent again; a running one is."""
    lab.write(slot_hours=0.0003, turnover_hours=0, notice_days=0)  # about a second a day
    set_up(lab)
    lab.ok("book", "acme", "--rig", "rig-a", "--start", "now")
    assert wait_until(lambda: lab.ok("list").out.count("acme") == 0, 5)
    lab.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    body = retained(central, SCHEDULE)
    assert body is not None and [s["start"][:4] for s in body["slots"]] == [str(YEAR)]
