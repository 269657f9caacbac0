"""`lab notice post` and `lab notice list`, against a real central mosquitto."""

from __future__ import annotations

import json

from gateway.devkit.central import CentralBroker
from gateway.devkit.mosquitto import MqttProbe, wait_until
from tests.lab.helpers import YEAR, Lab

REFUSED = 135  # not authorised


def add_tester(lab: Lab, name: str) -> str:
    """`lab testers add NAME`; its access code."""
    return lab.ok("testers", "add", name, "--until", f"{YEAR + 1}-12-31").last_line


def notices(probe: MqttProbe) -> list[dict[str, object]]:
    """The notices a probe received, as JSON."""
    return [json.loads(m.payload) for m in probe.snapshot(lambda t: "/notice/" in t)]


def test_a_notice_reaches_a_tester_connected_then_and_one_connecting_later(
    lab: Lab, central: CentralBroker
) -> None:
    """Posted about rig-a's variant be-1: acme, subscribed to p1/#, gets it at once; beta,
    connecting afterwards, gets it retained; both see the same payload, and `notice list`
    shows it published."""
    acme, beta = add_tester(lab, "acme"), add_tester(lab, "beta")
    with MqttProbe(central, "acme", acme, ["p1/#"]) as early:
        posted = lab.ok("notice", "post", "--rig", "rig-a", "--variant", "be-1", "firmware 50217")
        ident = posted.out.split()[1]
        assert early.wait_for(lambda m: any("/notice/" in x.topic for x in m), 5)
    topic = f"p1/rig-a/notice/{ident}"
    assert posted.out.strip() == f"posted {ident} on {topic}"
    with MqttProbe(central, "beta", beta, ["p1/+/notice/#"]) as late:
        assert late.wait_for(lambda m: bool(m), 5)
        assert [m.topic for m in late.snapshot()] == [topic] and late.snapshot()[0].retain
    body = notices(late)[0]
    assert notices(early) == [body]
    assert set(body) == {"id", "at", "rig", "variant", "kind", "text"}
    assert (body["id"], body["rig"], body["variant"], body["kind"], body["text"]) == (
        ident,
        "rig-a",
        "be-1",
        "operator",
        "firmware 50217",
    )
    lines = lab.ok("notice", "list").out.splitlines()
    assert lines[1].split()[:4] == [ident, "rig-a", "be-1", "yes"]


def test_lab_wide_notices_are_ordered_and_carry_an_expiry(lab: Lab, central: CentralBroker) -> None:
    """Two lab-wide notices land on p1/lab/notice/ID, ids in posting order; each carries the
    MQTT 5 message expiry (a retained copy shows what is left of it)."""
    code = add_tester(lab, "acme")
    first = lab.ok("notice", "post", "maintenance on friday").out.split()[1]
    second = lab.ok("notice", "post", "maintenance done").out.split()[1]
    assert first < second and "-lab-" in first
    expiry: list[int] = []
    with MqttProbe(central, "acme", code, ["p1/lab/notice/#"]) as tester:
        tester.client.on_message = lambda c, u, m: expiry.append(
            int(getattr(m.properties, "MessageExpiryInterval", 0))
        )
        tester.client.unsubscribe("p1/lab/notice/#")
        tester.client.subscribe("p1/lab/notice/#", qos=1)
        assert wait_until(lambda: len(expiry) >= 2, 5)
    assert all(180 * 24 * 3600 - 60 < e <= 180 * 24 * 3600 for e in expiry)
    ids = [line.split()[0] for line in lab.ok("notice", "list").out.splitlines()[1:]]
    assert ids == [first, second]


def test_a_tester_cannot_write_a_notice_and_bad_input_is_refused(
    lab: Lab, central: CentralBroker
) -> None:
    """A tester's publish on either notice tree is refused (0x87); an empty text, a bad rig
    or a variant without rig exit 2 and post nothing."""
    code = add_tester(lab, "acme")
    with MqttProbe(central, "acme", code) as tester:
        assert tester.try_publish("p1/rig-a/notice/x", b"{}", retain=True) == (REFUSED, True)
        assert tester.try_publish("p1/lab/notice/x", b"{}", retain=True) == (REFUSED, True)
    for args in (
        ["  "],
        ["--rig", "Rig/A", "t"],
        ["--variant", "be-1", "t"],
        ["--rig", "lab", "t"],
    ):
        result = lab("notice", "post", *args)
        assert (result.rc, result.out) == (2, ""), (args, result)
    assert lab.ok("notice", "list").out.splitlines()[1:] == []
