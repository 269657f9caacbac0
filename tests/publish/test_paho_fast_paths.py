"""The link's fast paths through paho: one socket read for many packets, PUBACKs decoded as
paho decodes them. A broker played by the test (real loopback TCP) sends the exact bytes."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

from gateway.publish import mqtt as mqtt_link
from gateway.publish._paho import FastClient
from gateway.publish.mqtt import MqttLink
from gateway.publish.settings import MqttSettings
from tests.publish.scripted_broker import (
    PINGRESP,
    ScriptedBroker,
    connected_client,
    outcome,
    puback,
    publish_qos1,
    read_packet,
    read_when_ready,
)
from tests.support.mosquitto import wait_until


@pytest.fixture
def scripted() -> Iterator[ScriptedBroker]:
    """A broker the test plays by hand."""
    broker = ScriptedBroker()
    yield broker
    broker.close()


def test_many_pubacks_are_taken_with_one_socket_read(scripted) -> None:
    """Ten PUBACKs waiting: one recv for all of them (paho alone makes three per packet)."""
    client, conn, told = connected_client(scripted, FastClient)
    mids = publish_qos1(client, conn, 10)
    conn.sendall(b"".join(puback(mid, 0) for mid in mids))
    time.sleep(0.05)  # all ten are in the client's socket
    reads = client.socket_reads
    assert read_when_ready(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [mid for mid, *_ in told] == mids
    assert client.socket_reads - reads == 1  # paho reads as many packets as it awaits: all ten
    assert client.buffered() == 0


def test_bytes_paho_did_not_take_stay_buffered_until_the_next_read(scripted) -> None:
    """paho reads at most as many packets as it awaits; the rest is kept, then read, in order."""
    client, conn, told = connected_client(scripted, FastClient)
    first, second = publish_qos1(client, conn, 2)
    conn.sendall(puback(first, 0) + PINGRESP + puback(second, 0))
    time.sleep(0.05)
    reads = client.socket_reads
    read_when_ready(client)  # it awaits two messages: it reads two packets
    assert [mid for mid, *_ in told] == [first]
    assert client.buffered() == len(puback(second, 0))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # from the buffer
    assert [mid for mid, *_ in told] == [first, second]
    assert client.socket_reads - reads == 1


def test_a_new_socket_drops_what_the_old_one_left(scripted) -> None:
    """After a reconnect, bytes of the old connection are never read as the new one's."""
    client, conn, told = connected_client(scripted, FastClient)
    first, second = publish_qos1(client, conn, 2)
    conn.sendall(puback(first, 0) + PINGRESP + puback(second, 0))
    time.sleep(0.05)
    read_when_ready(client)
    assert client.buffered() == len(puback(second, 0))
    client.reconnect()
    assert client.buffered() == 0
    fresh = scripted.accept()
    read_when_ready(client)  # the CONNACK; paho resends the message still awaited
    assert [mid for mid, *_ in told] == [first]  # the old PUBACK of `second` was not taken
    assert read_packet(fresh)[0] & 0xF0 == 0x30
    fresh.sendall(puback(second, 0))
    read_when_ready(client)
    assert [mid for mid, *_ in told] == [first, second]


def test_a_packet_split_across_reads_is_joined(scripted) -> None:
    """A PUBACK whose bytes come in two reads is decoded once both are there."""
    client, conn, told = connected_client(scripted, FastClient)
    first, second = publish_qos1(client, conn, 2)
    both = puback(first, 0) + puback(second, 0)
    conn.sendall(both[:6])
    time.sleep(0.05)
    read_when_ready(client)
    assert [mid for mid, *_ in told] == [first]
    conn.sendall(both[6:])
    read_when_ready(client)
    assert [mid for mid, *_ in told] == [first, second]


def test_a_closed_connection_is_reported_as_lost(scripted) -> None:
    """The broker closing the socket after its last packet is still paho's lost connection."""
    client, conn, told = connected_client(scripted, FastClient)
    (mid,) = publish_qos1(client, conn, 1)
    conn.sendall(puback(mid, 0))
    conn.close()
    time.sleep(0.05)
    assert read_when_ready(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [m for m, *_ in told] == [mid]
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert not client.is_connected()


def _acked(
    scripted: ScriptedBroker, client_class: type[mqtt.Client], protocol: int, tail: bytes
) -> tuple[Any, ...]:
    """What a client says to one PUBACK ending in `tail` (after the mid): the result of its
    read (or the error it raises) and what on_publish was told."""
    client, conn, told = connected_client(scripted, client_class, protocol)
    try:
        (mid,) = publish_qos1(client, conn, 1)
        packet = mid.to_bytes(2, "big") + tail
        conn.sendall(bytes([0x40, len(packet)]) + packet)
        rc = outcome(lambda: read_when_ready(client))
        said = [
            (m, value, text, failure, properties.json() if properties else None)
            for m, value, text, failure, properties in told
        ]
        return rc, said
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
        conn.close()
        scripted.connections.clear()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("tail", ["none", "code", "code+properties", "code+bad-properties"])
def test_pubacks_are_decoded_exactly_as_paho_decodes_them(scripted, protocol, tail) -> None:
    """Every reason code, with and without properties: the same callback and result as paho's."""
    for code in range(256):
        if tail == "none":
            body = b""
        elif tail == "code":
            body = bytes([code])
        elif tail == "code+properties":
            body = bytes([code, 5]) + b"\x1f\x00\x02ok"  # Reason String "ok"
        else:
            body = bytes([code, 5]) + b"\x1f\x00\x09ok"  # a length beyond the packet
        expected = _acked(scripted, mqtt.Client, protocol, body)
        got = _acked(scripted, FastClient, protocol, body)
        assert got == expected, f"code {code:#04x}, {tail}"
        if tail == "none":
            break


def test_a_puback_for_a_message_not_awaited_is_ignored(scripted) -> None:
    """A PUBACK whose mid paho does not hold (a resend's old answer) reaches no callback."""
    client, conn, told = connected_client(scripted, FastClient)
    (mid,) = publish_qos1(client, conn, 1)
    conn.sendall(puback(mid + 100, 0))
    assert read_when_ready(client) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert told == []
    conn.sendall(puback(mid, 0))  # still awaited
    read_when_ready(client)
    assert [m for m, *_ in told] == [mid]


def test_the_network_thread_reads_buffered_packets_without_waiting_for_the_socket(
    scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packets already read but not yet taken are handled at once, not at the next tick."""
    # A tick far longer than the wait below: the second PUBACK arrives in time only if the
    # buffered packets are handled without waiting for the socket or the tick.
    monkeypatch.setattr(mqtt_link, "NETWORK_TICK_S", 60.0)
    link = MqttLink(
        MqttSettings(port=scripted.port, keepalive=60),
        client_id="rig-a",
        will_topic="p1/rig-a/status",
        will_payload=b"{}",
        events=queue.SimpleQueue(),
    )
    link.start()
    try:
        conn = scripted.accept()
        assert wait_until(lambda: link.connected, 5)
        first = link.publish("t/1", b"x", 1).mid
        second = link.publish("t/2", b"x", 1).mid
        for _ in range(2):
            read_packet(conn)
        # paho awaits two messages: its first read takes the first PUBACK and a PINGRESP;
        # the next ones find the rest already buffered, with nothing more on the socket.
        conn.sendall(puback(first, 0) + PINGRESP + PINGRESP + puback(second, 0))
        assert wait_until(lambda: [a.mid for a in link.acks] == [first, second], 10, 0.005)
        assert link.client is not None and link.client.buffered() == 0
    finally:
        link.stop(timeout=2)
