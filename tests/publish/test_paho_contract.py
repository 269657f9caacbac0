"""What our fast paths rely on in paho-mqtt still holds: its private names (gateway.publish._paho)
and, against a real mosquitto, the behaviour built on them. A paho release that changes either
fails here before it reaches a rig."""

from __future__ import annotations

import select
import time
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from packaging.requirements import Requirement
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.publish import _paho
from gateway.publish._paho import FastClient, PackedProperties, contract_problems, puback_reason
from tests.publish.helpers import PASSWORDS
from tests.support.mosquitto import MqttProbe

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_paho_still_has_the_private_names_we_rely_on() -> None:
    """Every private method (with its parameters), attribute (with its type) and call is there."""
    assert contract_problems() == []


def test_a_changed_private_name_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a method with other parameters, or one gone, is named."""

    def handle(self: Any, cmd: str, extra: int) -> None:
        """A changed signature."""

    monkeypatch.setattr(mqtt.Client, "_handle_pubackcomp", handle)
    monkeypatch.delattr(mqtt.Client, "_do_on_publish")
    problems = contract_problems()
    assert any(p.startswith("Client._handle_pubackcomp takes") for p in problems), problems
    assert "Client._do_on_publish is gone" in problems


def test_the_installed_paho_is_within_the_tested_pin() -> None:
    """pyproject pins paho to the minor versions tested; the one installed is one of them."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if d.startswith("paho-mqtt")]
    assert pin.specifier.contains(version("paho-mqtt")), (pin, version("paho-mqtt"))
    assert not pin.specifier.contains("3.0") and not pin.specifier.contains("2.3")


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_the_fast_paths_hold_against_a_real_mosquitto(broker, protocol: int) -> None:
    """20 QoS 1 publishes through a window of 4 to mosquitto: every PUBACK takes our decoding
    (paho's bookkeeping follows: all published, the window refills), no read beyond one per
    packet, and the user properties arrive as packed."""
    count = 20
    tester = MqttProbe(broker, "acme", PASSWORDS["acme"], ["p1/rig-a/slot/acme/#"]).start()
    client = FastClient(CallbackAPIVersion.VERSION2, client_id="contract", protocol=protocol)
    client.username_pw_set("rig-a", PASSWORDS["rig-a"])
    client.max_inflight_messages_set(4)  # paho queues the rest and sends it as PUBACKs come
    told: list[tuple[int, Any, Any]] = []
    client.on_publish = lambda c, u, mid, reason, props: told.append((mid, reason, props))
    try:
        client.connect(broker.host, broker.port, keepalive=30)
        v5 = protocol == mqtt.MQTTv5
        pairs = (("variant", "v5"), ("seq", "7"))
        props = PackedProperties(pairs) if v5 else None
        infos = [
            client.publish(f"p1/rig-a/slot/acme/v5/raw/{n}", b"%d" % n, 1, properties=props)
            for n in range(count)
        ]
        deadline = time.monotonic() + 15
        while not all(info.is_published() for info in infos) and time.monotonic() < deadline:
            sock = client.socket()
            assert sock is not None, "mosquitto dropped the connection"
            wants = [sock] if client.want_write() else []
            timeout = 0 if client.buffered() else 0.5  # bytes read already: no wait for more
            readable, writable, _ = select.select([sock], wants, [], timeout)
            if readable or client.buffered():
                client.loop_read()
            if writable or client.want_write():
                client.loop_write()
            client.loop_misc()
        assert all(info.is_published() for info in infos)
        shared = puback_reason(0)
        assert shared is not None
        assert [mid for mid, _, _ in told] == [info.mid for info in infos]
        assert all(reason is shared.reason for _, reason, _ in told)  # our decoding, each time
        assert all(props.json() == {} for _, _, props in told)
        assert 1 <= client.socket_reads <= count + 1  # paho alone: three reads per packet
        assert tester.wait_for(lambda ms: len(ms) == count, 10)
        got = tester.snapshot()
        assert [m.payload for m in got] == [b"%d" % n for n in range(count)]
        assert all(m.user_properties == (pairs if v5 else ()) for m in got)
    finally:
        client.disconnect()
        tester.stop()


def test_packed_properties_are_what_paho_would_send() -> None:
    """Packed once, they pack as paho's own Properties and read as one (str, json)."""
    pairs = (("variant", "v5"), ("seq", "123"), ("ü", "\u20ac"))
    reference = Properties(PacketTypes.PUBLISH)
    reference.UserProperty = list(pairs)
    packed = PackedProperties(pairs)
    assert packed.pack() == bytes(reference.pack())
    assert packed.json() == reference.json()
    assert str(packed) == str(reference)
    assert _paho.pack_user_properties(pairs) == bytes(reference.pack())
