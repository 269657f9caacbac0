"""Rig and tester accounts in the dynamic security plugin, against a real central mosquitto."""

from __future__ import annotations

import json
import subprocess

from gateway.devkit.central import MOSQUITTO_CTRL, CentralBroker
from gateway.devkit.mosquitto import MqttProbe, wait_until
from gateway.lab.accounts import Accounts
from gateway.lab.dynsec import AdminLink, BrokerAddress
from tests.lab.helpers import PLANNER, PLANNER_PASSWORD, YEAR, Lab, login

REFUSED = 135  # not authorised


def add_tester(lab: Lab, name: str = "acme") -> str:
    """`lab testers add NAME`; its access code."""
    result = lab.ok("testers", "add", name, "--until", f"{YEAR + 1}-12-31")
    assert "access code" in result.out
    return result.last_line


def add_rig(lab: Lab, rig: str = "rig-a") -> str:
    """`lab rigs add RIG`; its password."""
    return lab.ok("rigs", "add", rig).last_line


def test_an_access_code_logs_in_and_a_wrong_one_does_not(lab: Lab, central: CentralBroker) -> None:
    """The code printed alone on the last line logs in; another code, or none, does not."""
    code = add_tester(lab)
    assert len(code) >= 32 and " " not in code  # 192 random bits, URL-safe
    assert login(central, "acme", code) == 0
    assert login(central, "acme", code + "x") == REFUSED
    assert login(central, "acme", "") == REFUSED


def test_the_plugin_keeps_only_a_salted_hash(lab: Lab, central: CentralBroker) -> None:
    """Neither the plugin's file nor the lab's store holds the code itself."""
    code = add_tester(lab)
    assert code not in central.dynsec_file.read_text()
    assert code.encode() not in lab.db.read_bytes()
    client = next(
        c for c in json.loads(central.dynsec_file.read_text())["clients"] if c["username"] == "acme"
    )
    assert client["salt"] and client["password"] != code


def test_a_tester_on_p1_hash_receives_only_its_slot_and_the_public_topics(
    lab: Lab, central: CentralBroker
) -> None:
    """Subscribed to p1/#, tester acme gets its own slot topics and the public state; not
    beta's slot, not the rigs' schedules or their answers."""
    acme, beta, rig = add_tester(lab, "acme"), add_tester(lab, "beta"), add_rig(lab)
    public = ["status", "variants", "health/v1", "calendar", "notice/n1"]
    hidden = ["slot/beta/v1/telegram", "schedule/applied", "bridge/state"]
    with (
        MqttProbe(central, "acme", acme, ["p1/#"]) as tester,
        MqttProbe(central, "beta", beta, ["p1/#"]) as other,
        MqttProbe(central, "rig-a", rig) as writer,
    ):
        for level in ["slot/acme/v1/telegram", *public, *hidden]:
            assert not writer.try_publish(f"p1/rig-a/{level}", b"x")[1], level
        assert tester.wait_for(lambda m: len(m) >= 1 + len(public), 5)
        wait_until(lambda: len(other.snapshot()) >= 1 + len(public), 2)
        got = {m.topic.removeprefix("p1/rig-a/") for m in tester.snapshot()}
    assert got == {"slot/acme/v1/telegram", *public}
    assert {m.topic for m in other.snapshot()} >= {"p1/rig-a/slot/beta/v1/telegram"}
    assert not any("acme" in m.topic for m in other.snapshot())


def test_a_tester_writes_nothing_not_even_a_schedule(lab: Lab, central: CentralBroker) -> None:
    """Every publish of a tester is refused with 0x87, its rig's schedule first of all."""
    code = add_tester(lab)
    with MqttProbe(central, "acme", code) as tester:
        assert tester.try_publish("p1/rig-a/schedule", b"{}") == (REFUSED, True)
        assert tester.try_publish("p1/rig-a/slot/acme/v1/telegram", b"x") == (REFUSED, True)
        assert tester.try_publish("p1/lab/notice/1", b"x") == (REFUSED, True)


def test_a_rig_writes_its_subtree_but_not_its_schedule_and_reads_only_its_schedule(
    lab: Lab, central: CentralBroker
) -> None:
    """rig-a may publish p1/rig-a/... and its `applied`, not p1/rig-a/schedule nor rig-b's
    topics; it receives its own retained schedule, not rig-b's."""
    rig_a, _ = add_rig(lab, "rig-a"), add_rig(lab, "rig-b")
    topics = ["p1/rig-a/schedule", "p1/rig-b/schedule"]
    with MqttProbe(central, "rig-a", rig_a, topics) as rig:
        assert not rig.try_publish("p1/rig-a/status", b"{}")[1]
        assert not rig.try_publish("p1/rig-a/schedule/applied", b'{"version": 1}')[1]
        assert rig.try_publish("p1/rig-a/schedule", b"{}") == (REFUSED, True)
        assert rig.try_publish("p1/rig-b/status", b"{}") == (REFUSED, True)
        assert rig.wait_for(lambda m: any(x.topic == topics[0] for x in m), 5)
        wait_until(lambda: len(rig.snapshot()) > 1, 0.5)
        assert {m.topic for m in rig.snapshot()} == {"p1/rig-a/schedule"}


def test_reset_code_closes_the_old_codes_sessions_and_only_the_new_one_logs_in(
    lab: Lab, central: CentralBroker
) -> None:
    """A tester connected with the old code is cut off; the old code is refused after."""
    old = add_tester(lab)
    with MqttProbe(central, "acme", old) as tester:
        result = lab.ok("testers", "reset-code", "acme")
        assert wait_until(lambda: not tester.client.is_connected(), 5)
    new = result.last_line
    assert new != old
    assert login(central, "acme", old) == REFUSED
    assert login(central, "acme", new) == 0
    assert lab("testers", "reset-code", "nobody").rc == 2


def test_rigs_add_prints_a_password_once_and_refuses_a_second_time(
    lab: Lab, central: CentralBroker
) -> None:
    """The password logs the rig in; adding it again, `lab`, or a bad id exit 2."""
    password = add_rig(lab)
    assert login(central, "rig-a", password) == 0
    for rig in ("rig-a", "lab", "Rig_A", "planner"):
        result = lab("rigs", "add", rig)
        assert result.rc == 2 and result.err, rig
    assert login(central, "rig-a", password) == 0  # the refusals changed nothing


def test_testers_add_refuses_what_it_must(lab: Lab, central: CentralBroker) -> None:
    """An existing tester, a bad name, a past or unreadable end, a rig's or the planner's
    name: exit 2 with the reason, and no account."""
    add_tester(lab)
    cases = {
        ("acme", f"{YEAR}-01-01"): "exists",
        ("ac/me", f"{YEAR}-01-01"): "invalid holder",
        ("cleo", "2001-01-01"): "not in the future",
        ("cleo", "soon"): "cannot read",
        ("rig-a", f"{YEAR}-01-01"): "a rig is called",
        ("planner", f"{YEAR}-01-01"): "planner",
    }
    for (name, until), reason in cases.items():
        result = lab("testers", "add", name, "--until", until)
        assert (result.rc, result.out) == (2, ""), (name, result)
        assert reason in result.err, (name, result.err)
    assert login(central, "cleo", "x") == REFUSED


def test_an_account_the_lab_did_not_make_is_never_touched(lab: Lab, central: CentralBroker) -> None:
    """A client made by hand with mosquitto_ctrl keeps its password: adding a tester or a
    rig of that name is refused."""
    lab.ok("list")  # the lab has made the broker ready
    ctrl = [MOSQUITTO_CTRL, "-h", central.host, "-p", str(central.port), "-u", PLANNER]
    subprocess.run(
        [*ctrl, "-P", PLANNER_PASSWORD, "dynsec", "createClient", "ops", "-p", "ops-secret"],
        check=True,
        capture_output=True,
    )
    for command in (["testers", "add", "ops", "--until", f"{YEAR}-01-01"], ["rigs", "add", "ops"]):
        result = lab(*command)
        assert result.rc == 2 and "did not make" in result.err
    assert login(central, "ops", "ops-secret") == 0


def test_a_leftover_account_of_the_lab_is_made_anew_clean(lab: Lab, central: CentralBroker) -> None:
    """An account the lab made but its store does not know (a failed command, a restored
    store) is replaced: the old code no longer works and the role is the tester's own."""
    lab.ok("list")
    address = BrokerAddress(central.host, central.port, PLANNER, PLANNER_PASSWORD)
    with AdminLink(address) as link:
        accounts = Accounts(link, "p1")
        old = accounts.create_tester("acme")
        link.command(
            {
                "command": "addRoleACL",
                "rolename": "p1-tester-acme",
                "acltype": "publishClientReceive",
                "topic": "p1/+/slot/beta/#",
                "allow": True,
            }
        )
    new = add_tester(lab)
    assert login(central, "acme", old) == REFUSED
    assert login(central, "acme", new) == 0
    with AdminLink(address) as link:
        role = link.command({"command": "getRole", "rolename": "p1-tester-acme"})["role"]
    assert not any("beta" in acl["topic"] for acl in role["acls"])


def test_the_broker_is_made_ready_once_and_the_planner_can_publish_schedules(
    lab: Lab, central: CentralBroker
) -> None:
    """The first command sets the deny defaults and the planner's role (the plugin kicks the
    planner: the lab connects again); the next finds nothing to change."""
    lab.ok("publish")
    before = central.dynsec_file.read_text()
    config = json.loads(before)
    assert config["defaultACLAccess"]["publishClientReceive"] is False
    planner = next(c for c in config["clients"] if c["username"] == PLANNER)
    assert {"rolename": "p1-lab-planner"} in planner["roles"]
    lab.ok("publish")
    assert central.dynsec_file.read_text() == before


def test_a_wrong_planner_password_fails_the_account_commands(
    lab: Lab, central: CentralBroker
) -> None:
    """Refused credentials: exit 1 saying so, and nothing recorded."""
    (lab.folder / "planner.pass").write_text("wrong\n")
    result = lab("testers", "add", "acme", "--until", f"{YEAR}-01-01")
    assert result.rc == 1 and "refused the planner" in result.err
    (lab.folder / "planner.pass").write_text(PLANNER_PASSWORD + "\n")
    assert "acme" not in lab.ok("audit").out
