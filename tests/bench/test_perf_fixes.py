"""Performance fixes the end-to-end benchmark led to, shown on a real mosquitto.

- `Publisher.lagging`: true only while connected with a large unacknowledged backlog (the
  daemon's reader then yields so the writer and paho's thread get the interpreter).
- The MQTT link's socket has Nagle's algorithm off (TCP_NODELAY).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import corpus
from gateway.devkit.mosquitto import MosquittoBroker
from gateway.p1 import Frame, Framer, Telegram, decode_telegram
from gateway.publish import (
    MqttSettings,
    Publisher,
    PublisherSettings,
    Slot,
    SlotSchedule,
    SpoolSettings,
)
from gateway.publish.publisher import LAG_MESSAGES
from tests.support.pty import wait_until

PASSWORDS = {"rig-a": "rig-secret", "acme": "acme-secret"}


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A private mosquitto with the project's config."""
    b = MosquittoBroker(PASSWORDS, rigs=("rig-a",))
    try:
        yield b.start()
    finally:
        if b.proc is not None and b.proc.poll() is None:
            os.kill(b.proc.pid, signal.SIGCONT)
        b.close()


@pytest.fixture
def publisher(broker: MosquittoBroker, tmp_path: Path) -> Iterator[Publisher]:
    """A started publisher for rig-a, with acme holding the slot now."""
    now = datetime.now(UTC)
    settings = PublisherSettings(
        "rig-a",
        MqttSettings(port=broker.port, username="rig-a", password=PASSWORDS["rig-a"]),
        SpoolSettings(dir=tmp_path / "spool"),
        require_sync=False,
    )
    schedule = SlotSchedule([Slot("acme", now - timedelta(hours=1), now + timedelta(hours=1))])
    p = Publisher(settings, schedule)
    p.start()
    try:
        yield p
    finally:
        p.stop(timeout=2.0)


def _telegram() -> Telegram:
    """One decoded corpus telegram."""
    entry = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5.txt")
    frame = next(f for f in Framer().feed(entry.read()) if isinstance(f, Frame))
    return decode_telegram(frame.raw, "auto")


def _submit(p: Publisher, count: int) -> None:
    """Submit `count` telegrams (two messages each)."""
    telegram = _telegram()
    for n in range(count):
        now = datetime.now(UTC)
        ns = int(now.timestamp() * 1e9)
        p.submit_telegram(f"meter-{n % 4}", telegram, ns, ns)


def test_lagging_only_while_connected_with_a_big_backlog(
    broker: MosquittoBroker, publisher: Publisher
) -> None:
    """Stalled broker: lagging once LAG_MESSAGES are unacknowledged; false again once drained."""
    wait_until(lambda: publisher.status().connected, 15, message="connected")
    assert not publisher.lagging
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)  # the connection stays up, no PUBACK comes
    try:
        _submit(publisher, LAG_MESSAGES // 2 + 10)
        assert publisher.status().outstanding >= LAG_MESSAGES
        assert publisher.status().connected
        assert publisher.lagging
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    wait_until(lambda: publisher.status().outstanding == 0, 30, message="backlog acknowledged")
    assert not publisher.lagging


def test_not_lagging_while_disconnected_whatever_the_backlog(
    broker: MosquittoBroker, publisher: Publisher
) -> None:
    """Broker away: the spool takes the input; yielding would only slow the reader."""
    wait_until(lambda: publisher.status().connected, 15, message="connected")
    broker.kill()
    wait_until(lambda: not publisher.status().connected, 15, message="disconnected")
    _submit(publisher, LAG_MESSAGES)
    assert publisher.status().outstanding >= LAG_MESSAGES
    assert not publisher.lagging


def _connections_to(port: int) -> list[socket.socket]:
    """This process's open TCP connections to a loopback `port` (duplicates: close them)."""
    found: dict[str, socket.socket] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            inode = os.readlink(f"/proc/self/fd/{name}")
            if not inode.startswith("socket:") or inode in found:
                continue  # not a socket, or one already found (under a duplicate made here)
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        try:
            peer = sock.getpeername()[1] if inet and sock.type == socket.SOCK_STREAM else None
        except OSError:
            peer = None  # not connected
        if peer == port:
            found[inode] = sock
        else:
            sock.close()
    return list(found.values())


def test_the_broker_connection_has_nagle_off(broker: MosquittoBroker, publisher: Publisher) -> None:
    """TCP_NODELAY is set on the publisher's connection as soon as it is connected."""
    wait_until(lambda: publisher.status().connected, 15, message="connected")
    connections = _connections_to(broker.port)
    try:
        assert len(connections) == 1  # the publisher's, and nothing else of this process
        assert connections[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for sock in connections:
            sock.close()
