"""Disabling, enabling, removing and expiring testers, against a real central mosquitto."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from gateway.devkit.central import CentralBroker
from gateway.devkit.mosquitto import MqttProbe, wait_until
from gateway.lab.commands import Lab as LabCommands
from gateway.lab.settings import load_lab_settings
from tests.lab.helpers import YEAR, Lab, login, retained

REFUSED = 135  # not authorised


def add_tester(lab: Lab, name: str, until: str = f"{YEAR + 1}-12-31") -> str:
    """`lab testers add NAME --until UNTIL`; its access code."""
    return lab.ok("testers", "add", name, "--until", until).last_line


def test_disable_closes_a_live_session_at_once_and_enable_lets_it_back_in(
    lab: Lab, central: CentralBroker
) -> None:
    """A connected tester is cut off within 2 s of `disable`, and its code refused; after
    `enable` the same code logs in again."""
    code = add_tester(lab, "acme")
    with MqttProbe(central, "acme", code, ["p1/#"]) as tester:
        assert tester.client.is_connected()
        assert lab.ok("testers", "disable", "acme").out == "tester acme disabled\n"
        assert wait_until(lambda: not tester.client.is_connected(), 2.0)
        tester.client.loop_stop()  # paho would try again and again
    assert login(central, "acme", code) == REFUSED
    assert "acme  " in lab.ok("testers", "list").out
    lab.ok("testers", "enable", "acme")
    assert login(central, "acme", code) == 0


def test_disable_enable_remove_refuse_an_unknown_tester(lab: Lab, central: CentralBroker) -> None:
    """Exit 2 with the reason, for a name never added or not valid."""
    for verb in ("disable", "enable", "remove"):
        for name in ("nobody", "No/Body"):
            result = lab("testers", verb, name)
            assert result.rc == 2 and result.err, (verb, name, result)


def test_a_disabled_tester_cannot_be_booked(lab: Lab, central: CentralBroker) -> None:
    """The booking rules see the disabled state."""
    add_tester(lab, "acme")
    lab.ok("testers", "disable", "acme")
    result = lab("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-03-02T08:00")
    assert result.rc == 2 and "disabled" in result.err


def test_list_shows_name_agreement_end_and_enabled(lab: Lab, central: CentralBroker) -> None:
    """One row per tester, by name; the end on the lab's wall clock."""
    add_tester(lab, "beta", f"{YEAR + 1}-06-30")
    add_tester(lab, "acme")
    lab.ok("testers", "disable", "beta")
    lines = lab.ok("testers", "list").out.splitlines()
    assert lines[0].split() == ["TESTER", "UNTIL", "ENABLED"]
    assert [line.split() for line in lines[1:]] == [
        ["acme", f"{YEAR + 2}-01-01T00:00:00+01:00", "yes"],
        ["beta", f"{YEAR + 1}-07-01T00:00:00+02:00", "no"],
    ]


def test_expire_disables_exactly_the_testers_whose_agreement_has_ended(
    lab: Lab, central: CentralBroker
) -> None:
    """Run a year and a half later: acme's agreement (ended) is disabled and its session
    closed; beta's (running) and cleo's (already disabled) are left as they are."""
    acme = add_tester(lab, "acme", f"{YEAR + 1}-06-30")
    beta = add_tester(lab, "beta", f"{YEAR + 3}-12-31")
    add_tester(lab, "cleo", f"{YEAR + 1}-01-31")
    lab.ok("testers", "disable", "cleo")
    later = datetime(YEAR + 2, 1, 1, tzinfo=UTC)
    out = io.StringIO()
    commands = LabCommands(load_lab_settings(lab.config), now=later, out=out, err=io.StringIO())
    with MqttProbe(central, "acme", acme, ["p1/#"]) as tester:
        try:
            assert commands.testers_expire() == ["acme"]
        finally:
            commands.close()
        assert wait_until(lambda: not tester.client.is_connected(), 2.0)
        tester.client.loop_stop()
    assert "tester acme disabled" in out.getvalue()
    assert login(central, "acme", acme) == REFUSED
    assert login(central, "beta", beta) == 0
    rows = {
        line.split()[0]: line.split()[-1] for line in lab.ok("testers", "list").out.splitlines()
    }
    assert rows == {"TESTER": "ENABLED", "acme": "no", "beta": "yes", "cleo": "no"}
    assert lab.ok("testers", "expire").out == "no agreement has ended\n"  # now: nothing ended


def test_remove_then_add_again_starts_clean(lab: Lab, central: CentralBroker) -> None:
    """Remove deletes the account, cancels the coming booking (audited; the rig is told a
    schedule without it); a new acme gets a new code, a fresh agreement and no bookings,
    and the old code stays refused."""
    old = add_tester(lab, "acme")
    lab.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-03-02T08:00")
    told = retained(central, "p1/rig-a/schedule")
    assert told is not None and [s["holder"] for s in told["slots"]] == ["acme"]
    removed = lab.ok("testers", "remove", "acme")
    assert removed.out.startswith("tester acme removed\ncancelled 1 rig-a")
    assert login(central, "acme", old) == REFUSED
    schedule = retained(central, "p1/rig-a/schedule")
    assert schedule is not None and schedule["version"] > told["version"]
    assert schedule["slots"] == []
    audit = lab.ok("audit").out
    assert "testers remove" in audit and "why=removed" in audit
    assert lab("testers", "disable", "acme").rc == 2  # gone

    new = add_tester(lab, "acme", f"{YEAR + 2}-12-31")
    assert new != old
    assert login(central, "acme", old) == REFUSED
    assert login(central, "acme", new) == 0
    assert lab.ok("list", "--holder", "acme").out.splitlines()[1:] == []
    rows = lab.ok("testers", "list").out.splitlines()[1:]
    assert [r.split() for r in rows] == [["acme", f"{YEAR + 3}-01-01T00:00:00+01:00", "yes"]]


def test_the_shipped_timer_runs_testers_expire_daily(lab: Lab, central: CentralBroker) -> None:
    """The service's ExecStart is `p1-gateway lab --config ... testers expire` (the command
    runs, on this lab's config), and its timer is daily and catches up a missed run."""
    root = Path(__file__).resolve().parents[2] / "systemd"
    service = (root / "p1-lab-expire.service").read_text()
    timer = (root / "p1-lab-expire.timer").read_text()
    (exec_start,) = [x for x in service.splitlines() if x.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[:4] == ["/usr/local/bin/p1-gateway", "lab", "--config", "/etc/p1-lab/lab.toml"]
    assert lab.ok(*argv[4:]).out == "no agreement has ended\n"
    assert "OnCalendar=*-*-* 00:05:00" in timer and "Persistent=true" in timer
    assert "Type=oneshot" in service
