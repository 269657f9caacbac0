"""The link's fast paths through paho: one socket read for many packets, PUBACKs decoded as
paho decodes them."""

from __future__ import annotations

import os
import queue
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.publish.mqtt import MqttLink, _Client
from gateway.publish.settings import MqttSettings

PINGRESP = b"\xd0\x00"


def puback(mid: int, code: int | None = None, properties: bytes | None = None) -> bytes:
    """A PUBACK packet: the mid, then (MQTT 5) an optional reason code and properties."""
    body = mid.to_bytes(2, "big")
    if code is not None:
        body += bytes([code])
        if properties is not None:
            body += bytes([len(properties)]) + properties
    return bytes([0x40, len(body)]) + body


class CountingSocket:
    """A real socket that counts its `recv` calls (paho reads through `recv` only)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0

    def recv(self, bufsize: int) -> bytes:
        """Count, then read."""
        self.recvs += 1
        return self.sock.recv(bufsize)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def client_with_out_messages(
    mids: range, protocol: int = mqtt.MQTTv5, sock: Any = None
) -> tuple[_Client, list]:
    """A client whose QoS 1 messages `mids` await PUBACKs, recording what on_publish is told;
    reading from `sock` when given."""
    client = _Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client._sock = sock
    client.suppress_exceptions = False
    told: list[tuple[int, int, str, bool, Any]] = []

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        """Note what paho says about one acknowledged message."""
        told.append((mid, reason.value, str(reason), reason.is_failure, properties))

    client.on_publish = on_publish
    for mid in mids:
        msg = mqtt.MQTTMessage(mid=mid, topic=b"t")
        msg.qos = 1
        client._out_messages[mid] = msg
        client._inflight_messages += 1
    return client, told


@pytest.fixture
def wire() -> Any:
    """A connected pair of real sockets: the client's end (counting reads) and the broker's."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    yield CountingSocket(ours), broker
    ours.close()
    broker.close()


def test_many_pubacks_are_taken_with_one_socket_read(wire) -> None:
    """Ten PUBACKs waiting: one recv for all of them (paho alone makes three per packet)."""
    ours, broker = wire
    client, told = client_with_out_messages(range(1, 11), sock=ours)
    broker.sendall(b"".join(puback(mid, 0) for mid in range(1, 11)))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [mid for mid, *_ in told] == list(range(1, 11))
    assert ours.recvs == 1  # paho reads as many packets as it awaits: ten, all from one read
    assert client.buffered() == 0


def test_bytes_paho_did_not_take_stay_buffered_until_the_next_read(wire) -> None:
    """paho reads at most as many packets as it awaits; the rest is kept, then read, in order."""
    ours, broker = wire
    client, told = client_with_out_messages(range(1, 2), sock=ours)
    broker.sendall(puback(1, 0) + PINGRESP + puback(2, 0))
    client.loop_read()  # it awaits one message: it reads one packet
    assert [mid for mid, *_ in told] == [1]
    assert client.buffered() == len(PINGRESP) + len(puback(2, 0))
    client._ping_t = 1.0  # a PINGREQ is outstanding
    client.loop_read()
    assert client._ping_t == 0  # the PINGRESP was read from the buffer
    assert ours.recvs == 1


def test_a_new_socket_drops_what_the_old_one_left(wire) -> None:
    """After a reconnect, bytes of the old connection are never read as the new one's."""
    ours, broker = wire
    client, told = client_with_out_messages(range(1, 2), sock=ours)
    broker.sendall(puback(1, 0) + puback(2, 0))
    client.loop_read()
    assert client.buffered() == len(puback(2, 0))
    fresh, fresh_broker = socket.socketpair()
    try:
        fresh.setblocking(False)
        client._sock = fresh
        assert client.buffered() == 0
        client._out_messages[2] = mqtt.MQTTMessage(mid=2, topic=b"t")
        client.loop_read()  # nothing on the new socket: the old PUBACK of mid 2 is not taken
        assert [mid for mid, *_ in told] == [1]
    finally:
        fresh.close()
        fresh_broker.close()


def test_a_packet_split_across_reads_is_joined(wire) -> None:
    """A PUBACK whose bytes come in two reads is decoded once both are there."""
    ours, broker = wire
    client, told = client_with_out_messages(range(1, 3), sock=ours)
    both = puback(1, 0) + puback(2, 0)
    broker.sendall(both[:6])
    client.loop_read()
    assert [mid for mid, *_ in told] == [1]
    broker.sendall(both[6:])
    client.loop_read()
    assert [mid for mid, *_ in told] == [1, 2]


def test_a_closed_connection_is_reported_as_lost(wire) -> None:
    """The broker closing the socket after its last packet is still paho's lost connection."""
    ours, broker = wire
    client, told = client_with_out_messages(range(1, 2), sock=ours)
    broker.sendall(puback(1, 0))
    broker.close()
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [mid for mid, *_ in told] == [1]
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST


def _outcome(client: _Client, told: list, packet: bytes, handler: Any) -> tuple[Any, ...]:
    """What handling one PUBACK packet body gives: the return code or error, and the callback."""
    client._in_packet["command"] = 0x40
    client._in_packet["packet"] = bytearray(packet)
    client._in_packet["remaining_length"] = len(packet)
    try:
        rc: Any = handler(client, "PUBACK")
    except Exception as exc:  # paho raises MalformedPacket for some; the same is expected
        rc = type(exc).__name__
    said = [
        (mid, value, text, failure, properties.json() if properties else None)
        for mid, value, text, failure, properties in told
    ]
    told.clear()
    return rc, said


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
@pytest.mark.parametrize("tail", ["none", "code", "code+properties", "code+bad-properties"])
def test_pubacks_are_decoded_exactly_as_paho_decodes_them(protocol: int, tail: str) -> None:
    """Every reason code, with and without properties: the same callback and result as paho's."""
    for code in range(256):
        if tail == "none":
            packet = puback(7)
        elif tail == "code":
            packet = puback(7, code)
        elif tail == "code+properties":
            packet = puback(7, code, b"\x1f\x00\x02ok")  # Reason String "ok"
        else:
            packet = puback(7, code, b"\x1f\x00\x09ok")  # a length beyond the packet
        body = packet[2:]
        ours, ours_told = client_with_out_messages(range(7, 8), protocol)
        theirs, their_told = client_with_out_messages(range(7, 8), protocol)
        expected = _outcome(theirs, their_told, body, mqtt.Client._handle_pubackcomp)
        got = _outcome(ours, ours_told, body, _Client._handle_pubackcomp)
        assert got == expected, f"code {code:#04x}, {tail}"
        if tail == "none":
            break


def test_a_puback_for_a_message_not_awaited_is_ignored() -> None:
    """A PUBACK whose mid paho does not hold (a resend's old answer) reaches no callback."""
    client, told = client_with_out_messages(range(1, 2))
    rc, said = _outcome(client, told, puback(9, 0)[2:], _Client._handle_pubackcomp)
    assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert said == []
    assert 1 in client._out_messages


def test_the_network_thread_reads_buffered_packets_without_waiting_for_the_socket(wire) -> None:
    """Packets already read but not yet taken are handled at once, not at the next tick."""
    ours, broker = wire
    link = MqttLink(
        MqttSettings(port=1),
        client_id="rig-a",
        will_topic="p1/rig-a/status",
        will_payload=b"{}",
        events=queue.SimpleQueue(),
    )
    link._wake_r, link._wake_w = os.pipe()
    try:
        client, _ = client_with_out_messages(range(1, 2), sock=ours)
        client.on_publish = link._on_publish
        broker.sendall(puback(1, 0) + puback(2, 0))
        client.loop_read()  # paho awaited one message: the second PUBACK stays buffered
        assert [ack.mid for ack in link.acks] == [1]
        client._out_messages[2] = mqtt.MQTTMessage(mid=2, topic=b"t")
        link._serve_once(client, threading.Event())  # the socket itself has nothing more
        assert [ack.mid for ack in link.acks] == [1, 2]
        assert client.buffered() == 0
    finally:
        os.close(link._wake_r)
        os.close(link._wake_w)
