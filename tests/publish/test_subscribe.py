"""The link's subscriptions against a real mosquitto: made on every connect, each message handed
off on the network thread (the hand-off only enqueues), refusals counted."""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.devkit.central import CentralBroker
from gateway.publish import Publisher
from gateway.publish.mqtt import Inbound
from tests.lab.helpers import PLANNER as PLANNER_NAME
from tests.lab.helpers import PLANNER_PASSWORD, Lab
from tests.publish.helpers import PASSWORDS, all_day, settings
from tests.support.mosquitto import MosquittoBroker, MqttProbe, wait_until

SCHEDULE = "p1/rig-a/schedule"
PLANNER = ("planner", "planner-pw")


@pytest.fixture
def lab_broker() -> Iterator[MosquittoBroker]:
    """The project's broker with a planner who may write the rigs' schedules."""
    broker = MosquittoBroker(
        {**PASSWORDS, PLANNER[0]: PLANNER[1]},
        rigs=("rig-a",),
        extra_acl=f"user {PLANNER[0]}\ntopic write p1/+/schedule\n",
    )
    try:
        yield broker.start()
    finally:
        broker.close()


class Inbox:
    """A hand-off that only enqueues, noting the thread it was called on."""

    def __init__(self) -> None:
        self.messages: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self.threads: set[str] = set()

    def __call__(self, message: Inbound) -> None:
        """Take one message (on the link's network thread)."""
        self.threads.add(threading.current_thread().name)
        self.messages.put(message)

    def next(self, timeout: float = 10.0) -> Inbound:
        """The next message handed off."""
        return self.messages.get(timeout=timeout)


def tell(broker: MosquittoBroker, payload: bytes, topic: str = SCHEDULE) -> None:
    """Publish as the planner, retained."""
    with MqttProbe(broker, *PLANNER) as planner:
        assert not planner.try_publish(topic, payload, retain=True)[1]  # (16: none subscribed)


def test_a_subscription_is_made_on_every_connect_and_handed_off(
    lab_broker: MosquittoBroker,
    spool_dir: Path,
    publisher: Callable[..., Publisher],
) -> None:
    """The retained message comes on connect, on the network thread; after the broker lost
    everything and came back, the link subscribes again and gets what is published then."""
    tell(lab_broker, b"one")
    pub = Publisher(settings(spool_dir, lab_broker), all_day())
    inbox = Inbox()
    pub.link.subscribe(SCHEDULE, inbox)
    pub.start()
    try:
        first = inbox.next()
        assert (first.topic, first.payload, first.retain) == (SCHEDULE, b"one", True)
        assert inbox.threads == {"p1gw-mqtt"}
        lab_broker.kill()
        for path in lab_broker.state_dir.iterdir():
            path.unlink()
        lab_broker.start()
        tell(lab_broker, b"two")
        again = inbox.next(15)
        assert (again.topic, again.payload) == (SCHEDULE, b"two")
        assert pub.link.received == 2 and pub.link.subscribe_refusals == 0
    finally:
        pub.stop(timeout=2.0)


def test_a_subscription_made_while_connected_takes_effect_at_once(
    lab_broker: MosquittoBroker, spool_dir: Path, publisher: Callable[..., Publisher]
) -> None:
    """Subscribing while connected takes effect at once; a topic the static ACL does not let
    the rig read is granted but delivers nothing (mosquitto checks reads on delivery)."""
    pub = publisher(settings(spool_dir, lab_broker), all_day())
    assert wait_until(lambda: pub.status().connected, 10)
    tell(lab_broker, b"now")
    tell(lab_broker, b"other rig", "p1/rig-b/schedule")
    inbox = Inbox()
    pub.link.subscribe("p1/rig-b/schedule", inbox)
    pub.link.subscribe(SCHEDULE, inbox)
    assert inbox.next().payload == b"now"
    assert inbox.messages.empty() and pub.link.callback_errors == 0


def test_a_subscription_the_broker_refuses_is_counted(
    tmp_path: Path, spool_dir: Path, publisher: Callable[..., Publisher]
) -> None:
    """On the central broker (the dynamic security plugin: subscribing is denied but where a
    role allows it) the rig may subscribe to its own schedule only: another rig's is refused
    in the SUBACK, counted and logged, and its own still comes."""
    central = CentralBroker(PLANNER_NAME, PLANNER_PASSWORD).start()
    try:
        lab = Lab(tmp_path, central.port)
        password = lab.ok("rigs", "add", "rig-a").last_line
        base = settings(spool_dir, central)
        mqtt = dataclasses.replace(base.mqtt, password=password)
        pub = Publisher(dataclasses.replace(base, mqtt=mqtt), all_day())
        inbox = Inbox()
        pub.link.subscribe("p1/rig-b/schedule", inbox)
        pub.link.subscribe(SCHEDULE, inbox)
        pub.start()
        try:
            assert json.loads(inbox.next().payload)["version"] == 1  # `rigs add` told it
            assert wait_until(lambda: pub.link.subscribe_refusals == 1, 5)
            assert inbox.messages.empty() and pub.link.callback_errors == 0
        finally:
            pub.stop(timeout=2.0)
    finally:
        central.close()
