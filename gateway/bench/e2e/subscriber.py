"""The subscriber of `bench e2e`: the slot holder's paho client, timing every arrival.

It also names who is who on the bench's broker: the holder, the gateway's rig, the baseline's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HOLDER = "bench"
OURS_RIG = "rig-a"
BASE_RIG = "rig-b"
PASSWORDS = {OURS_RIG: "rig-a-secret", BASE_RIG: "rig-b-secret", HOLDER: "bench-secret"}
SYS_RECEIVED = "$SYS/broker/publish/messages/received"


@dataclass(slots=True)
class Arrivals:
    """What the subscriber saw of one side."""

    telegrams: int = 0
    raws: int = 0
    # While recording (rig-load phases): arrival times and what identifies each telegram.
    telegram_at: dict[tuple[str, str], int] = field(default_factory=dict)
    """Gateway: (variant, seq) -> arrival ns of the decoded telegram message."""
    raw_of: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """Gateway: (variant, seq) -> the raw twin's bytes."""
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    """Baseline: (arrival ns, payload)."""


class Subscriber:
    """The holder's paho client: counts every message per side, records arrivals on demand."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.sides = {OURS_RIG: Arrivals(), BASE_RIG: Arrivals()}
        self.recording = False
        self.sys_samples: list[tuple[int, int]] = []
        """(arrival ns, PUBLISH messages the broker received since it started)."""
        self._subscribed = threading.Event()
        self._acked = threading.Condition()
        self._acks: set[int] = set()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="p1-bench-subscriber", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(HOLDER, PASSWORDS[HOLDER])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_message = self._on_message
        self.host, self.port = host, port
        # $SYS comes at QoS 0 (no PUBACK, so the subscriber's kernel delays its TCP ACK up to
        # 40 ms, and mosquitto's Nagle then holds the next message): a connection of its own.
        self.sys_client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="p1-bench-sys", protocol=mqtt.MQTTv5
        )
        self.sys_client.username_pw_set(HOLDER, PASSWORDS[HOLDER])
        self.sys_client.on_connect = self._on_sys_connect
        self.sys_client.on_message = self._on_sys_message

    def start(self, timeout: float = 15.0) -> Subscriber:
        """Connect, subscribe (QoS 1: nothing lost, counts exact), wait for the SUBACK."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the subscriber did not get its SUBACK")
        self.sys_client.connect(self.host, self.port, keepalive=30)
        self.sys_client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect."""
        for client in (self.client, self.sys_client):
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Subscribe to the decoded telegrams of both rigs and to the broker's count."""
        if not rc.is_failure:
            client.subscribe(f"p1/+/slot/{HOLDER}/+/telegram", 1)

    def _on_sys_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Subscribe to the broker's count of PUBLISH messages received."""
        if not rc.is_failure:
            client.subscribe(SYS_RECEIVED, 0)

    def _on_sys_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """One $SYS sample."""
        with contextlib.suppress(ValueError):
            self.sys_samples.append((time.monotonic_ns(), int(msg.payload)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """SUBACK."""
        self._subscribed.set()
        with self._acked:
            self._acks.add(mid)
            self._acked.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """UNSUBACK."""
        with self._acked:
            self._acks.add(mid)
            self._acked.notify_all()

    def want_raw(self, on: bool, timeout: float = 10.0) -> None:
        """Also receive the gateway's raw twins (to identify each telegram), or stop that.

        Only while latency is measured: in a flood they would double the subscriber's work.
        """
        topic = f"p1/{OURS_RIG}/slot/{HOLDER}/+/raw"
        if on:
            _, mid = self.client.subscribe(topic, 1)
        else:
            _, mid = self.client.unsubscribe(topic)
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise RuntimeError("the broker did not acknowledge a (un)subscription")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """One message: count it; while recording keep what identifies it and when it came."""
        now = time.monotonic_ns()
        topic: str = msg.topic
        parts = topic.split("/")
        side = self.sides.get(parts[1])
        if side is None:
            return
        kind = parts[-1]
        if kind == "telegram":
            side.telegrams += 1
        elif kind == "raw":
            side.raws += 1
        if not self.recording:
            return
        if parts[1] == BASE_RIG:
            side.payloads.append((now, bytes(msg.payload)))
            return
        props = dict(getattr(msg.properties, "UserProperty", None) or ())
        key = (parts[-2], props.get("seq", ""))
        if kind == "telegram":
            side.telegram_at[key] = now
        elif kind == "raw":
            side.raw_of[key] = bytes(msg.payload)

    def broker_received_rate(self, t0: int, t1: int) -> float | None:
        """PUBLISH messages/s the broker took in between t0 and t1, from its $SYS counts.

        mosquitto publishes the count only when it changed, about every 1-2 s: the rate runs
        from the first to the last sample inside the window, or, when fewer than two fall
        inside, across the samples just around it.
        """
        samples = list(self.sys_samples)
        inside = [(t, v) for t, v in samples if t0 <= t <= t1]
        if len(inside) < 2:
            before = [(t, v) for t, v in samples if t <= t0]
            after = [(t, v) for t, v in samples if t >= t1]
            if not before or not after:
                return None
            inside = [before[-1], after[0]]
        (ta, va), (tb, vb) = inside[0], inside[-1]
        if tb <= ta:
            return None
        return (vb - va) / ((tb - ta) / 1e9)
