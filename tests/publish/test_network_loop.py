"""The link's own network thread: direct writes, gathered PUBACKs, refill rules, packing."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.publish import Publisher
from gateway.publish._paho import PackedProperties, pack_user_properties
from gateway.publish.publisher import ACK_LINGER_S, CONTROL_WINDOW, split_receive_maximum
from tests.publish.helpers import (
    EXTRA_ACL,
    PASSWORDS,
    all_day,
    make_telegram,
    settings,
    telegrams,
)
from tests.support.mosquitto import MosquittoBroker, MqttProbe, Received, wait_until


def test_pubacks_of_several_telegrams_are_read_in_one_wake_up(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """A telegram every 10 ms: the network thread reads the PUBACKs in batches, not one each."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    reads_before = pub.link.reads
    count = 40
    for n in range(count):
        pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
        time.sleep(0.01)
    assert pub.flush(10)
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == count, 10)
    reads = pub.link.reads - reads_before
    # 80 PUBACKs over ~0.4 s: one read each would be 80; gathering for ACK_LINGER_S (0.1 s)
    # needs about 0.4 / 0.1 + 1 reads. A generous bound that one read per PUBACK cannot meet.
    assert ACK_LINGER_S >= 0.05
    assert reads <= 2 * count // 4, f"{reads} network reads for {2 * count} PUBACKs"
    assert pub.status().counters.acked == 2 * count + 1  # and the session's start


def test_publishing_writes_in_the_callers_thread(broker, probe, publisher, spool_dir: Path) -> None:
    """A publish reaches the broker while the network thread waits in select: no hand-off."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    pub.submit_telegram("v5", make_telegram(0), time.monotonic_ns(), time.time_ns())
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == 1, 10)  # seqs are reserved now
    client = pub.link.client
    assert client is not None
    with client.io_lock:  # the network thread can neither read nor write meanwhile
        pub.submit_telegram("v5", make_telegram(1), time.monotonic_ns(), time.time_ns())
        assert tester.wait_for(lambda ms: len(telegrams(ms)) == 2, 10)


def test_a_half_full_window_cuts_the_lingering_short(
    broker, probe, publisher, spool_dir: Path, monkeypatch
) -> None:
    """Telegrams faster than the linger: the window half full wakes the network thread."""
    monkeypatch.setattr("gateway.publish.publisher.ACK_LINGER_S", 30.0)
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    count = 40  # 80 messages through a window of 16
    for n in range(count):
        pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
    # Delivered without a flush: without the wake-up the window stays full for the 30 s linger.
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == count, 10), pub.status()
    assert pub.flush(10), pub.status()  # a flush ends the lingering over the last PUBACKs


def test_flush_does_not_wait_out_the_linger(
    broker, probe, publisher, spool_dir, monkeypatch
) -> None:
    """A few telegrams in flight and a 30 s linger: flush still gets their PUBACKs at once."""
    monkeypatch.setattr("gateway.publish.publisher.ACK_LINGER_S", 30.0)
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    for n in range(3):
        pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
        time.sleep(0.05)  # each acknowledged while the network thread lingers
    assert pub.flush(10), pub.status()


@given(
    st.lists(st.tuples(st.text(max_size=40), st.text(max_size=300)), min_size=1, max_size=6).map(
        tuple
    )
)
def test_user_properties_are_packed_as_paho_packs_them(pairs: tuple[tuple[str, str], ...]) -> None:
    """Our packing of PUBLISH user properties: the same bytes as paho's Properties.pack()."""
    reference = Properties(PacketTypes.PUBLISH)
    reference.UserProperty = list(pairs)
    assert pack_user_properties(pairs) == bytes(reference.pack())
    packed = PackedProperties(pairs)
    assert packed.pack() == bytes(reference.pack())
    assert "UserProperty" in str(packed)


def test_a_burst_of_health_messages_neither_delays_telegrams_nor_is_lost(
    broker, probe, publisher, spool_dir: Path, monkeypatch
) -> None:
    """Health of many ports at once, then a telegram, under a 30 s linger: all of it arrives."""
    monkeypatch.setattr("gateway.publish.publisher.ACK_LINGER_S", 30.0)
    ports = 5 * CONTROL_WINDOW  # more than paho's whole in-flight and queue room
    watcher = probe("bravo", ["p1/rig-a/health/#"])
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    pub.submit_telegram("v5", make_telegram(0), time.monotonic_ns(), time.time_ns())
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == 1, 10)  # the network thread lingers
    for n in range(ports):
        pub.publish_health(f"port-{n}", {"state": "up", "telegrams": n})
    pub.submit_telegram("v5", make_telegram(1), time.monotonic_ns(), time.time_ns())
    # Before the control window, paho queued this telegram behind the burst until the linger
    # ended, and refused the health messages beyond its queue bound.
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == 2, 10), pub.status()
    assert watcher.wait_for(lambda ms: len({m.topic for m in ms}) == ports, 10), pub.status()
    assert pub.status().counters.control_refused == 0
    pub.publish_health("port-0", {"state": "silent"})  # a changed payload still goes out
    assert watcher.wait_for(
        lambda ms: any(b'"silent"' in m.payload for m in ms if m.topic.endswith("/port-0")), 10
    )


def _data_segments_out(sock: socket.socket) -> int:
    """Linux TCP_INFO's tcpi_data_segs_out: data segments this socket has sent."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    if len(info) < 160:
        pytest.skip("this kernel's TCP_INFO has no tcpi_data_segs_out (Linux 4.6+)")
    return int(struct.unpack_from("I", info, 156)[0])


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux's")
def test_a_telegrams_two_packets_leave_in_one_segment(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """The decoded and the raw PUBLISH of a telegram go out together: one wake of the broker."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    pub.submit_telegram("v5", make_telegram(0), time.monotonic_ns(), time.time_ns())

    def of_v5(ms: list[Received]) -> int:
        return len([m for m in ms if "/v5/" in m.topic])

    assert tester.wait_for(lambda ms: of_v5(ms) == 2, 10)  # sent after the seq reservation
    assert pub.flush(5)
    client = pub.link.client
    assert client is not None and client.socket() is not None
    sock = client.socket()
    count = 10
    before = _data_segments_out(sock)
    for n in range(1, count + 1):
        pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
        assert tester.wait_for(lambda ms, k=n + 1: len(telegrams(ms)) == k, 10)
    assert tester.wait_for(lambda ms: of_v5(ms) == 2 * (count + 1), 10)
    assert _data_segments_out(sock) - before == count  # 2 * count without the cork


def messages_out_at_each_publish(pub: Publisher, monkeypatch: Any) -> list[int]:
    """A list that gets, before each of `pub`'s publishes, how many of its messages of either
    kind the broker has not acknowledged yet, as the link sees them: published, no PUBACK read."""
    out: list[int] = []
    lock = threading.Lock()
    unacked: set[int] = set()
    acked_first: set[int] = set()  # a PUBACK read before its publish() returned
    client = pub.link.client
    assert client is not None
    on_publish = client.on_publish
    publish = pub.link.publish

    def counting_ack(c: Any, userdata: Any, mid: int, *rest: Any) -> None:
        """Note the PUBACK, then let the link take it."""
        with lock:
            if mid in unacked:
                unacked.discard(mid)
            else:
                acked_first.add(mid)
        on_publish(c, userdata, mid, *rest)

    def counting(*args: Any, **kwargs: Any) -> Any:
        """Note the count, then publish."""
        with lock:
            out.append(len(unacked))
        result = publish(*args, **kwargs)
        with lock:
            if result.accepted and result.mid in acked_first:
                acked_first.discard(result.mid)
            elif result.accepted:
                unacked.add(result.mid)
        return result

    client.on_publish = counting_ack
    monkeypatch.setattr(pub.link, "publish", counting)
    return out


def receive_maximum_of(broker: MosquittoBroker) -> int | None:
    """The Receive Maximum `broker` says in its CONNACK to an MQTT 5 client."""
    said: list[int | None] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("observer", PASSWORDS["observer"])

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        """Note what the CONNACK says."""
        said.append(getattr(properties, "ReceiveMaximum", None))

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert wait_until(lambda: bool(said), 10)
    finally:
        client.disconnect()
        client.loop_stop()
    return said[0]


def test_the_broker_receive_maximum_is_shared_by_telegrams_and_control_messages() -> None:
    """Telegram and control windows together stay within the broker's Receive Maximum."""
    assert split_receive_maximum(16, None) == (16, CONTROL_WINDOW)
    assert split_receive_maximum(16, 20) == (15, 5)  # mosquitto's default max_inflight_messages
    assert split_receive_maximum(16, 65535) == (16, CONTROL_WINDOW)
    for receive_maximum in range(2, 200):
        window, control = split_receive_maximum(16, receive_maximum)
        assert window >= 1 and control >= 1 and window + control <= receive_maximum
    assert split_receive_maximum(16, 1) == (1, 1)  # not split: the publisher caps both at 1


def test_a_receive_maximum_of_one_has_one_message_out_of_either_kind(
    spool_dir: Path, monkeypatch
) -> None:
    """mosquitto with max_inflight_messages 1 says Receive Maximum 1: telegrams and health
    share that one slot, and all of them arrive."""
    with MosquittoBroker(
        PASSWORDS, rigs=("rig-a",), extra_acl=EXTRA_ACL, extra_config="max_inflight_messages 1"
    ) as tight:
        assert receive_maximum_of(tight) == 1  # what mosquitto says in CONNACK
        tester = MqttProbe(tight, "acme", PASSWORDS["acme"], ["p1/rig-a/slot/acme/#"]).start()
        watcher = MqttProbe(tight, "bravo", PASSWORDS["bravo"], ["p1/rig-a/health/#"]).start()
        pub = Publisher(settings(spool_dir, tight), all_day("acme"))
        pub.start()
        try:
            assert wait_until(lambda: pub.status().connected, 10)
            out = messages_out_at_each_publish(pub, monkeypatch)
            count = 20
            assert tight.proc is not None
            os.kill(tight.proc.pid, signal.SIGSTOP)  # no PUBACK comes while all are submitted
            try:
                for n in range(count):
                    pub.publish_health(f"port-{n}", {"state": "up", "telegrams": n})
                    pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
                time.sleep(0.5)  # the writer's refills and the network thread have their go
            finally:
                os.kill(tight.proc.pid, signal.SIGCONT)
            assert tester.wait_for(lambda ms: len(telegrams(ms)) == count, 20), pub.status()
            assert watcher.wait_for(lambda ms: len({m.topic for m in ms}) == count, 20)
            assert len(out) >= 3 * count and max(out) == 0, (len(out), max(out))
        finally:
            pub.stop(timeout=2)
            tester.stop()
            watcher.stop()


def test_a_burst_never_exceeds_the_brokers_receive_maximum(
    broker, probe, publisher, spool_dir: Path, monkeypatch
) -> None:
    """mosquitto says Receive Maximum 20: health and telegrams together never have more out."""
    monkeypatch.setattr("gateway.publish.publisher.ACK_LINGER_S", 30.0)
    watcher = probe("bravo", ["p1/rig-a/health/#"])
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    unacked = messages_out_at_each_publish(pub, monkeypatch)
    ports, count = 40, 30
    for n in range(count):
        pub.publish_health(f"port-{n}", {"state": "up", "telegrams": n})
        pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
    for n in range(count, ports):
        pub.publish_health(f"port-{n}", {"state": "up", "telegrams": n})
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == count, 10), pub.status()
    assert watcher.wait_for(lambda ms: len({m.topic for m in ms}) == ports, 10), pub.status()
    assert max(unacked) + 1 <= 20, max(unacked)
