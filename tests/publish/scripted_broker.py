"""A broker played by the test itself over real loopback TCP: it sends exactly the bytes a test
asks for (PUBACKs with any reason code, packets split or run together), which mosquitto never
would. Clients reach it only through paho's public API (connect, publish, loop_*)."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PINGRESP = b"\xd0\x00"


def puback(mid: int, code: int | None = None, properties: bytes | None = None) -> bytes:
    """A PUBACK packet: the mid, then (MQTT 5) an optional reason code and properties."""
    body = mid.to_bytes(2, "big")
    if code is not None:
        body += bytes([code])
        if properties is not None:
            body += bytes([len(properties)]) + properties
    return bytes([0x40, len(body)]) + body


def read_packet(conn: socket.socket) -> bytes:
    """One whole MQTT packet from a blocking socket (fixed header, remaining length, body)."""
    data = bytearray(_read_exactly(conn, 1))
    length, shift = 0, 0
    while True:
        byte = _read_exactly(conn, 1)
        data += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return bytes(data + _read_exactly(conn, length))


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    """`size` bytes from `conn` (ConnectionError at EOF)."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data


class ScriptedBroker:
    """A loopback listener whose connections the test answers by hand."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []

    def accept(self, protocol: int = mqtt.MQTTv5, timeout: float = 5.0) -> socket.socket:
        """Accept the next client, read its CONNECT and accept it with a CONNACK."""
        self.server.settimeout(timeout)
        conn, _ = self.server.accept()
        conn.settimeout(timeout)
        self.connections.append(conn)
        connect = read_packet(conn)
        assert connect[0] == 0x10, connect
        conn.sendall(b"\x20\x03\x00\x00\x00" if protocol == mqtt.MQTTv5 else b"\x20\x02\x00\x00")
        return conn

    def close(self) -> None:
        """Close the listener and every connection."""
        for conn in self.connections:
            conn.close()
        self.server.close()


def connected_client(
    broker: ScriptedBroker,
    client_class: type[mqtt.Client],
    protocol: int = mqtt.MQTTv5,
) -> tuple[Any, socket.socket, list[tuple[int, int, str, bool, Any]]]:
    """A client of `client_class` connected to `broker` (CONNACK read), the broker's end of the
    connection, and a list of what on_publish is told: (mid, code, text, failure, properties)."""
    client = client_class(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.suppress_exceptions = False
    client.max_inflight_messages_set(0)  # no bound: every publish goes out at once
    told: list[tuple[int, int, str, bool, Any]] = []

    def on_publish(c: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        """Note what paho says about one acknowledged message."""
        told.append((mid, reason.value, str(reason), reason.is_failure, properties))

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port, keepalive=60)
    conn = broker.accept(protocol)
    read_when_ready(client)
    assert client.is_connected()
    return client, conn, told


def read_when_ready(client: mqtt.Client, timeout: float = 5.0) -> Any:
    """Wait until the client's socket is readable, then `loop_read` once: its result."""
    sock = client.socket()
    assert sock is not None
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, "nothing came from the broker"
    return client.loop_read()


def publish_qos1(client: mqtt.Client, conn: socket.socket, count: int) -> list[int]:
    """Publish `count` QoS 1 messages; the broker reads them; their mids."""
    mids = []
    for n in range(count):
        info = client.publish(f"t/{n}", b"x", qos=1)
        assert info.rc == 0
        mids.append(info.mid)
    for _ in mids:
        assert read_packet(conn)[0] & 0xF0 == 0x30  # PUBLISH
    return mids


def outcome(call: Callable[[], Any]) -> Any:
    """What `call` returns, or the name of the exception it raises."""
    try:
        return call()
    except Exception as exc:  # paho raises MalformedPacket for some packets
        return type(exc).__name__
