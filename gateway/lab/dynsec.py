"""The planner's MQTT session on the central broker: a thin shell around paho.

It sends JSON commands to mosquitto's dynamic security plugin (`$CONTROL/dynamic-security/v1`,
answers on `.../response`, matched by `correlationData`), reads what is retained under a few
topic filters, and publishes retained messages, waiting for the broker's PUBACK. Every failure
becomes a `LabBrokerError` (the plugin's own answers a `DynsecError`): callers never see paho
or socket errors.

Commands go with QoS 0: the plugin kicks a client whose roles change, the planner included;
a QoS 1 command cut off by that kick would be sent again by paho on every reconnect, and kick
again, forever. `send_and_rejoin` sends such a batch, waits for the kick, and connects anew.
Retained messages are read with QoS 0 subscriptions followed by one command: the broker writes
them to the socket in order, so once the command's answer is in, every retained message is.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.errors import DynsecError, LabBrokerError

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the central broker is and who the planner is there."""

    host: str
    port: int
    username: str
    password: str | None
    tls_ca_file: Path | None = None
    timeout: float = 10.0


@dataclass(slots=True)
class _Session:
    """What paho's thread tells the caller, guarded by one condition."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    connected: bool = False
    refused: str | None = None
    lost: str | None = None
    subacks: dict[int, list[int]] = field(default_factory=dict)
    pubacks: dict[int, tuple[bool, str]] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    retained: dict[str, bytes] = field(default_factory=dict)
    stop: bool = False


class AdminLink:
    """One connection as the plugin's admin; `open()` it, use it, `close()` it."""

    def __init__(self, address: BrokerAddress):
        self.address = address
        self._ids = itertools.count(1)
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._session = _Session()

    # --- connection ------------------------------------------------------------------------

    def open(self) -> AdminLink:
        """Connect, log in, and subscribe to the plugin's answers."""
        self._session = session = _Session()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"p1-lab-{os.getpid()}-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.connect_timeout = self.address.timeout
        client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls_ca_file is not None:
            try:
                client.tls_set(ca_certs=str(self.address.tls_ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise LabBrokerError(f"TLS: {self.address.tls_ca_file}: {exc}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # Only the network thread writes to the socket: without this paho would write from
        # the caller's thread too (it does so when no loop_start() thread exists).
        client.on_socket_register_write = _written_by_the_network_thread
        where = f"{self.address.host}:{self.address.port}"
        try:
            client.connect(self.address.host, self.address.port, keepalive=60, clean_start=True)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise LabBrokerError(f"cannot reach the broker at {where}: {exc}") from None
        self._client = client
        self._thread = threading.Thread(
            target=self._network, args=(client, session), name="lab-mqtt", daemon=True
        )
        self._thread.start()
        try:
            self._wait(lambda: session.connected or session.refused or session.lost, "log in")
            if not session.connected:
                reason = session.refused or session.lost
                raise LabBrokerError(
                    f"the broker at {where} refused the planner {self.address.username!r}: {reason}"
                )
            self._subscribe([RESPONSE_TOPIC], qos=0)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Disconnect and stop the network thread (safe to call twice)."""
        client, self._client = self._client, None
        thread, self._thread = self._thread, None
        if client is None:
            return
        client.disconnect()
        if thread is not None:
            thread.join(self.address.timeout)
            self._session.stop = True
            thread.join()

    def _network(self, client: mqtt.Client, session: _Session) -> None:
        """The network thread: paho's loop, until the connection ends (no reconnecting: a
        lab command is short, and a lost broker is an error for its caller)."""
        while not session.stop:
            rc = client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        with session.cond:
            session.connected = False
            if session.lost is None:
                session.lost = "connection closed"
            session.cond.notify_all()

    def __enter__(self) -> AdminLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paho's callbacks (its thread) -------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """CONNACK: logged in, or refused with a reason."""
        with self._session.cond:
            if rc.is_failure:
                self._session.refused = str(rc)
            else:
                self._session.connected = True
            self._session.cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """The connection ended (a kick says `Administrative action`)."""
        with self._session.cond:
            self._session.connected = False
            self._session.lost = str(rc)
            self._session.cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """SUBACK: the reason code of each filter."""
        with self._session.cond:
            self._session.subacks[mid] = [int(r.value) for r in rcs]
            self._session.cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        """PUBACK: taken or refused (MQTT 5 says why)."""
        with self._session.cond:
            self._session.pubacks[mid] = (bool(rc.is_failure), str(rc))
            self._session.cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """The plugin's answers by correlation id; retained messages by topic."""
        with self._session.cond:
            if msg.topic == RESPONSE_TOPIC:
                try:
                    answers = json.loads(msg.payload).get("responses", [])
                except (ValueError, AttributeError):
                    answers = []
                for answer in answers:
                    if isinstance(answer, dict) and "correlationData" in answer:
                        self._session.answers[str(answer["correlationData"])] = answer
            elif msg.retain:
                self._session.retained[msg.topic] = bytes(msg.payload)
            self._session.cond.notify_all()

    # --- waiting -----------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], object], what: str) -> None:
        """Wait until `ready()` under the session's lock, or fail after the timeout."""
        session = self._session
        deadline = time.monotonic() + self.address.timeout
        with session.cond:
            while not ready():
                if session.lost is not None:
                    raise LabBrokerError(f"lost the broker while waiting to {what}: {session.lost}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabBrokerError(f"the broker did not answer in time ({what})")
                session.cond.wait(left)

    def _client_or_fail(self) -> mqtt.Client:
        """The connected paho client."""
        if self._client is None:
            raise LabBrokerError("not connected to the broker")
        return self._client

    def _subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe and wait for the SUBACK; a refused filter is an error."""
        result, mid = self._client_or_fail().subscribe([(f, qos) for f in filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LabBrokerError(f"cannot subscribe to {', '.join(filters)}: {result}")
        self._wait(lambda: mid in self._session.subacks, "subscribe")
        codes = self._session.subacks[mid]
        refused = [f for f, code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            raise LabBrokerError(f"the broker lets the planner not read {', '.join(refused)}")

    # --- the plugin --------------------------------------------------------------------------

    def _send(self, commands: Iterable[Mapping[str, Any]], *, check: bool = True) -> list[str]:
        """Publish a batch of commands (QoS 0), each with a correlation id; the ids.

        Without `check` a failure to send is not an error: paho may report the connection
        closed although the batch went out (the network thread wrote it, and the plugin's
        kick closed the connection before paho's call returned)."""
        batch, ids = [], []
        for command in commands:
            ident = f"c{next(self._ids)}"
            batch.append({**command, "correlationData": ident})
            ids.append(ident)
        info = self._client_or_fail().publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=0)
        if check and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LabBrokerError(f"cannot send to the plugin: {info.rc}")
        return ids

    def commands(self, *commands: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run a batch of plugin commands; each one's answer in order (an `error` key when
        the plugin refused it)."""
        ids = self._send(commands)
        answers = self._session.answers
        what = (
            "get the dynamic security plugin's answer: is the plugin loaded, and is "
            f"{self.address.username!r} its admin?"
        )
        self._wait(lambda: all(i in answers for i in ids), what)
        return [answers.pop(i) for i in ids]

    def command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Run one command; its `data` (empty when it has none), or DynsecError."""
        (answer,) = self.commands(command)
        if "error" in answer:
            raise DynsecError(str(command.get("command")), str(answer["error"]))
        data = answer.get("data", {})
        return data if isinstance(data, dict) else {}

    def send_and_rejoin(self, *commands: Mapping[str, Any]) -> None:
        """Send commands that change the planner's own roles: the plugin then closes this
        connection (no answer comes back); wait for that, and connect again."""
        self._send(commands, check=False)
        session = self._session
        deadline = time.monotonic() + self.address.timeout
        with session.cond:
            while session.connected and time.monotonic() < deadline:
                session.cond.wait(deadline - time.monotonic())
        self.close()
        self.open()

    # --- retained messages ------------------------------------------------------------------

    def retained(self, filters: Sequence[str]) -> dict[str, bytes]:
        """Every retained message under `filters` (topic -> payload), as the broker has them
        now."""
        self._subscribe(filters, qos=0)
        self.commands({"command": "getDefaultACLAccess"})  # the fence: see the module's doc
        with self._session.cond:
            return dict(self._session.retained)

    def publish_retained(self, topic: str, payload: bytes, *, expiry: int | None = None) -> None:
        """Publish a retained message with QoS 1 (and an MQTT 5 message expiry in seconds,
        when given) and wait until the broker has taken it."""
        properties = None
        if expiry is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry
        info = self._client_or_fail().publish(
            topic, payload, qos=1, retain=True, properties=properties
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LabBrokerError(f"cannot publish {topic}: {info.rc}")
        mid = info.mid
        self._wait(lambda: mid in self._session.pubacks, f"publish {topic}")
        failed, reason = self._session.pubacks.pop(mid)
        if failed:
            raise LabBrokerError(f"the broker refused {topic}: {reason}")


def _written_by_the_network_thread(client: Any, userdata: Any, sock: Any) -> None:
    """paho's hook for an external loop: nothing to do, `AdminLink._network` writes (paho
    wakes it through its socket pair)."""
