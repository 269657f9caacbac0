"""The MQTT link: a thin shell over paho-mqtt 2.x, driven by a network thread of our own.

paho's `loop_start()` thread is not used: every `publish()` would write a byte to a socketpair
to wake that thread, which then writes the packet: two thread hand-offs per message, the
largest cost of a telegram at rig load. Our thread (`p1gw-mqtt`) runs paho's documented
external-loop calls (`loop_read`, `loop_write`, `loop_misc`, `reconnect`) over a `select` of
the broker socket and a wake-up pipe, and reconnects with the configured backoff. A publish
then writes its packet to the socket in the caller's thread, under one lock that serialises
every paho call that can write (so two threads never interleave bytes of two packets).
The network thread wakes only for what the broker sends (PUBACKs, CONNACK, PINGRESP), for the
keep-alive, and when a write could not complete (socket buffer full).

Acknowledgements are not queued to the publisher's writer thread: `on_publish` appends them to
`acks`, and after each loop iteration the network thread hands them over through `on_acks`,
outside paho's locks. While the publisher has nothing waiting for the window, the thread
lingers `linger()` seconds after reading, so the PUBACKs of several telegrams are read in one
wake-up instead of one each.

paho reads a packet with three `recv` calls (its first byte, its length, its rest) and builds
two ReasonCode objects and a Properties for every PUBACK; it packs a PUBLISH's properties anew
on every send. `gateway.publish._paho` holds our fast paths for these (one large read, PUBACKs
decoded with shared reason codes, user properties packed once): everything of ours that relies
on paho's private names is there, and this module uses paho's public API only.

Subscriptions (`subscribe`: the lab's schedule, say) are made again on every connect (the
sessions are clean); each message on them goes to its hand-off, which only enqueues it for
another thread: nothing received is processed on the network thread.

Callbacks do almost nothing: they set flags, append acks, and put the rare connection events on
a queue for the publisher's writer thread (never taking the publisher's lock: paho calls
on_publish while holding its own message lock, which `publish()` takes too). On every
successful connect, paho's own store of unacknowledged messages is dropped
(`drop_out_messages`): the spool owns redelivery, so resends come out in spool order and nothing
waits in paho's memory during an outage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.errors import BrokerError
from gateway.publish._paho import FastClient, PackedProperties, puback_outcome
from gateway.publish.settings import MqttSettings
from gateway.threadnames import name_this_thread

log = logging.getLogger(__name__)

#: Linux's TCP_CORK (None elsewhere: `MqttLink.corked` then does nothing).
_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)

#: CONNACK reason "Unsupported protocol version" (also what paho reports when a 3.1.1-only
#: broker answers a v5 CONNECT with return code 1).
UNSUPPORTED_PROTOCOL_VERSION = 0x84

#: Extra room in paho's own in-flight and queue bounds for retained control messages: the
#: publisher never has more of them unacknowledged at once (its CONTROL_WINDOW).
CONTROL_SLACK = 16

#: Retained control messages (status, catalogue, health, schedules) unacknowledged at once:
#: paho's own in-flight bound is the telegram window plus this. More wait in the publisher, the
#: newest payload per topic, and go out as PUBACKs come, so a burst of them (a health message
#: per port every few seconds and on every connect) never makes paho queue a telegram behind it.
CONTROL_WINDOW = CONTROL_SLACK


def split_receive_maximum(window: int, receive_maximum: int | None) -> tuple[int, int]:
    """The telegram and control windows under the broker's Receive Maximum (MQTT 5: how many
    QoS 1 messages it takes unacknowledged; None: no limit said). Together they stay within
    it: control messages get a quarter of it, at most CONTROL_WINDOW, at least one. At 1 there
    is nothing to split: both windows are 1, and the publisher caps the two kinds together."""
    if not receive_maximum:
        return max(1, window), CONTROL_WINDOW
    control = max(1, min(CONTROL_WINDOW, receive_maximum // 4))
    return max(1, min(window, receive_maximum - control)), control


#: paho's socket connect timeout (its default), part of the liveness budget while away.
CONNECT_TIMEOUT_S = 5.0
#: While connected the network loop iterates at least every NETWORK_TICK_S; allow for stalls.
CONNECTED_BUDGET_S = 10.0
#: How long the network thread waits for the broker before its keep-alive housekeeping.
NETWORK_TICK_S = 1.0
#: After an unexpected error in the network loop, pause this long before going on.
LOOP_ERROR_PAUSE_S = 0.1


class LinkClient(FastClient):
    """paho's client for our own network thread: writes serialised, loop iterations noted."""

    loop_progress: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.io_lock = threading.RLock()
        """Held around every paho call that can write to the socket (see the module doc)."""

    def loop_write(self) -> MQTTErrorCode:
        """paho's write, serialised: a publishing thread and the network thread may both write."""
        with self.io_lock:
            return super().loop_write()

    def loop_misc(self) -> MQTTErrorCode:
        """Record that the loop iterated, then do paho's work (keep-alive)."""
        self.loop_progress = time.monotonic()
        return super().loop_misc()


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted us; `generation` counts successful connects."""

    generation: int
    protocol: str
    receive_maximum: int | None


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    """The broker answered CONNECT with a failure."""

    reason_code: int
    reason: str
    unsupported_protocol: bool


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A connection attempt failed before any CONNACK (refused socket, timeout, TLS)."""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection of `generation` ended."""

    generation: int
    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker's answer to a QoS>0 publish (or a QoS 0 publish written out)."""

    generation: int
    mid: int
    failure: bool
    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """One of our paho callbacks raised; it was caught so the network thread lives on."""

    where: str
    error: str


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message the broker sent on a topic the link subscribed to."""

    topic: str
    payload: bytes
    retain: bool


#: A subscription's hand-off: called on the network thread, inside paho; it must only enqueue.
Handoff = Callable[[Inbound], None]

LinkEvent = Connected | ConnectRefused | ConnectFailed | Disconnected | Acked | CallbackFailed


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What paho said to one publish: `accepted` means it holds it (sent, or queued for send)."""

    accepted: bool
    mid: int
    rc: int


def _code(reason_code: Any) -> int:
    """A paho ReasonCode (or plain int) as an int."""
    value = getattr(reason_code, "value", reason_code)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class MqttLink:
    """One broker connection with our own network thread, reconnecting with backoff."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        will_topic: str,
        will_payload: bytes,
        events: queue.SimpleQueue[Any],
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.client_id = client_id
        self.will_topic = will_topic
        self.will_payload = will_payload
        self.events = events
        self._monotonic = monotonic
        self.protocol = settings.protocol
        self.connected = False
        """True between a successful CONNACK and the disconnect (set by the network thread)."""
        self.generation = 0
        self.last_progress = monotonic()
        """Monotonic time of our callbacks' last sign of life (see `progress_time`)."""
        self.callback_errors = 0
        self.loop_errors = 0
        self.reads = 0
        """Wake-ups of the network thread that read from the broker (diagnostics)."""
        self.restarts = 0
        self.fallbacks = 0
        self.acks: deque[Acked] = deque()
        """PUBACKs (and QoS 0 writes) not yet taken by the publisher, oldest first."""
        self.on_acks: Callable[[], None] | None = None
        """Called by the network thread, outside paho's locks, when `acks` is not empty."""
        self.linger: Callable[[], float] = lambda: 0.0
        """Seconds the network thread may wait after a read before reading again."""
        self._client: LinkClient | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._retry_delay: float | None = None
        self._wake_r = self._wake_w = -1
        self._props_key: tuple[tuple[str, str], ...] = ()
        self._props: Properties | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[int, Handoff]] = {}
        """Topic filter -> (QoS, hand-off); replaced whole on change (the network thread reads)."""
        self._suback_topics: dict[int, str] = {}
        self.received = 0
        """Messages handed off from the subscriptions."""
        self.subscribe_refusals = 0

    # --- set-up ------------------------------------------------------------------------

    def _build(self) -> LinkClient:
        """A configured paho client (TLS, credentials, will, bounds, callbacks), not connected."""
        s = self.settings
        v5 = self.protocol == "5"
        client = LinkClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.suppress_exceptions = True
        if s.tls_ca_file is not None:
            try:
                client.tls_set(ca_certs=str(s.tls_ca_file))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise BrokerError(f"TLS set-up with {s.tls_ca_file} failed: {exc}") from exc
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        client.will_set(self.will_topic, self.will_payload, qos=1, retain=True)
        client.max_inflight_messages_set(s.window + CONTROL_SLACK)
        client.max_queued_messages_set(s.window + 4 * CONTROL_SLACK)
        client.reconnect_delay_set(
            min_delay=max(1, round(s.reconnect_min_delay)),
            max_delay=max(1, round(s.reconnect_max_delay)),
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_pre_connect = self._on_pre_connect
        client.on_socket_open = self._on_socket_open
        # No on_log: paho would format every packet's log line (and its properties) for it.
        return client

    def _connect(self, client: LinkClient) -> None:
        """connect_async (nothing is sent yet) and start the network thread, which connects."""
        s = self.settings
        try:
            if self.protocol == "5":
                client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=True)
            else:
                client.connect_async(s.host, s.port, keepalive=s.keepalive)
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self._retry_delay = None
        self._start_thread(client)

    def _start_thread(self, client: LinkClient) -> None:
        """Start a network thread for `client` (the caller holds `_lock`)."""
        self._halt = threading.Event()
        self._thread = threading.Thread(
            target=self._network, args=(client, self._halt), name="p1gw-mqtt", daemon=True
        )
        self._thread.start()

    def _halt_thread(self, timeout: float = CONNECT_TIMEOUT_S + 1.0) -> None:
        """Ask the network thread to end and wait up to `timeout` s for it (holding `_lock`)."""
        self._halt.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def start(self) -> None:
        """Configure paho, then connect in the background (retrying until it succeeds)."""
        with self._lock:
            self._stopping = False
            if self._wake_r < 0:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
            self._client = self._build()
            self._connect(self._client)

    def fall_back_to_311(self) -> None:
        """Replace the client with an MQTT 3.1.1 one (the broker refused v5)."""
        with self._lock:
            if self.protocol == "3.1.1" or self._stopping:
                return
            old = self._client
            self.protocol = "3.1.1"
            self.fallbacks += 1
            self._halt_thread()
            if old is not None:
                with old.io_lock, contextlib.suppress(Exception):
                    old.disconnect()
            self._client = self._build()
            self._connect(self._client)

    # --- the network thread --------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the network thread's select (a full pipe means it wakes anyway)."""
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def hurry(self) -> None:
        """Cut short the network thread's lingering: read the broker's PUBACKs now."""
        self._wake()

    def _drain_wake(self) -> None:
        """Empty the wake-up pipe."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _network(self, client: LinkClient, halt: threading.Event) -> None:
        """The network thread: connect with backoff, then read, write and keep alive."""
        name_this_thread("p1gw-mqtt")
        while not halt.is_set():
            try:
                if client.socket() is None:
                    self._connect_once(client, halt)
                else:
                    self._serve_once(client, halt)
            except Exception:
                self.loop_errors += 1
                if self.loop_errors <= 3 or self.loop_errors % 1000 == 0:
                    log.exception(
                        "MQTT network loop failed (%d so far); it goes on", self.loop_errors
                    )
                halt.wait(LOOP_ERROR_PAUSE_S)

    def _connect_once(self, client: LinkClient, halt: threading.Event) -> None:
        """One connection attempt, after the backoff when an earlier one failed or was lost."""
        delay = self._retry_delay
        if halt.is_set() or (delay is not None and halt.wait(delay)):
            return
        s = self.settings
        nxt = s.reconnect_min_delay if delay is None else delay * 2
        self._retry_delay = max(1.0, min(nxt, s.reconnect_max_delay))
        try:
            # Not under io_lock: a connect may wait CONNECT_TIMEOUT_S on an unreachable host,
            # and nothing publishes meanwhile (the publisher sends only while connected).
            client.reconnect()
        except (OSError, ssl.SSLError, ValueError):
            self._on_connect_fail(client, None)

    def _serve_once(self, client: LinkClient, halt: threading.Event) -> None:
        """Wait for the broker (or a wake-up), then read, write what is left, and keep alive."""
        sock = client.socket()
        if sock is None:
            return
        pending = getattr(sock, "pending", None)
        if client.buffered() or (callable(pending) and pending() > 0):
            readable = True  # bytes already read (paho stopped at its packet count) or decrypted
        else:
            rlist: list[Any] = [sock, self._wake_r]
            wlist: list[Any] = [sock] if client.want_write() else []
            try:
                ready, _, _ = select.select(rlist, wlist, [], NETWORK_TICK_S)
            except (OSError, ValueError, TypeError):  # closed under us: paho notices below
                ready = []
            if self._wake_r in ready:
                self._drain_wake()
            readable = sock in ready
        with client.io_lock:
            if readable:
                self.reads += 1
                client.loop_read()
            if client.want_write():
                client.loop_write()
            client.loop_misc()
        self._deliver_acks()
        if readable and not halt.is_set():
            linger = self.linger()
            if linger > 0 and not client.want_write():
                with contextlib.suppress(OSError, ValueError):
                    if select.select([self._wake_r], [], [], linger)[0]:
                        self._drain_wake()

    def _deliver_acks(self) -> None:
        """Hand the acknowledgements read so far to the publisher (outside paho's locks)."""
        hook = self.on_acks
        if self.acks and hook is not None:
            try:
                hook()
            except Exception as exc:
                self._failed("on_acks", exc)

    # --- callbacks (the network thread, inside paho: never raise, never block) ---------

    def _failed(self, where: str, exc: BaseException) -> None:
        """Count a callback failure and report it."""
        self.callback_errors += 1
        with contextlib.suppress(Exception):
            self.events.put(CallbackFailed(where, f"{type(exc).__name__}: {exc}"))

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """The broker connection's socket exists: turn Nagle's algorithm off (TCP_NODELAY).

        A telegram goes out as two PUBLISH packets back to back (decoded, raw). With Nagle on,
        the second (or the next telegram's) waits for the TCP ACK of the first; when the
        broker's own ACK is delayed (Linux: up to 40 ms), so is the telegram.
        """
        with contextlib.suppress(OSError, AttributeError):  # not a TCP socket: nothing to do
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_pre_connect(self, client: Any, userdata: Any) -> None:
        """A connection attempt starts: the loop is alive even while the broker is away."""
        self.last_progress = self._monotonic()

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        """CONNACK: on success drop paho's resend store, report and subscribe again; on failure
        report why."""
        try:
            self.last_progress = self._monotonic()
            code = _code(reason_code)
            if code != 0:
                self.events.put(
                    ConnectRefused(code, str(reason_code), code == UNSUPPORTED_PROTOCOL_VERSION)
                )
                return
            client.drop_out_messages()
            self._retry_delay = None
            self.generation += 1
            self.connected = True
            receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
            self.events.put(
                Connected(
                    self.generation,
                    self.protocol,
                    int(receive_max) if receive_max else None,
                )
            )
            self._suback_topics.clear()  # (SUBACKs a lost connection never brought)
            for topic, (qos, _) in self._subscriptions.items():  # the session is clean
                self._subscribe_now(client, topic, qos)
        except Exception as exc:
            self._failed("on_connect", exc)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """A connection attempt failed at the socket level."""
        try:
            self.last_progress = self._monotonic()
            self.events.put(ConnectFailed())
        except Exception as exc:
            self._failed("on_connect_fail", exc)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        """The connection ended: stop sending at once, report."""
        try:
            was = self.connected
            self.connected = False
            self.last_progress = self._monotonic()
            if was:
                self.events.put(Disconnected(self.generation, _code(reason_code), str(reason_code)))
        except Exception as exc:
            self._failed("on_disconnect", exc)

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        """PUBACK (or QoS 0 written): note success or the broker's refusal for the publisher."""
        try:
            self.last_progress = self._monotonic()
            code = _code(reason_code)
            failure, text = puback_outcome(code, reason_code)
            self.acks.append(Acked(self.generation, mid, failure, code, text))
        except Exception as exc:
            self._failed("on_publish", exc)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """A message on a subscribed topic: to its hand-off, which only enqueues it."""
        try:
            self.last_progress = self._monotonic()
            topic = message.topic
            for pattern, (_, handoff) in self._subscriptions.items():
                if mqtt.topic_matches_sub(pattern, topic):
                    self.received += 1
                    handoff(Inbound(topic, bytes(message.payload), bool(message.retain)))
                    return
        except Exception as exc:
            self._failed("on_message", exc)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        """SUBACK: a subscription the broker refused (its ACL) is counted and logged."""
        try:
            topic = self._suback_topics.pop(mid, "?")
            refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
            if refused:
                self.subscribe_refusals += 1
                log.warning("the broker refused the subscription to %s: %s", topic, refused[0])
        except Exception as exc:
            self._failed("on_subscribe", exc)

    # --- use -------------------------------------------------------------------------

    def subscribe(self, topic: str, handoff: Handoff, qos: int = 1) -> None:
        """Subscribe to `topic` (a topic or a filter): now when connected, and again on every
        connect. Each message on it goes to `handoff`, called on the network thread inside
        paho: it must only enqueue the message for another thread (never block, never raise)."""
        with self._lock:
            self._subscriptions = {**self._subscriptions, topic: (qos, handoff)}
            client = self._client
        if client is not None and self.connected:
            with client.io_lock:
                self._subscribe_now(client, topic, qos)
            self._wake()

    def _subscribe_now(self, client: mqtt.Client, topic: str, qos: int) -> None:
        """Send one SUBSCRIBE (holding the client's io_lock); its SUBACK names the topic."""
        mid = client.subscribe(topic, qos)[1]
        if mid is not None:
            self._suback_topics[mid] = topic

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
        expiry_s: int | None = None,
    ) -> PublishResult:
        """Hand one message to paho (non-blocking); `expiry_s` sets its MQTT 5 message expiry
        interval (ignored on 3.1.1). Raises ValueError for what paho refuses."""
        client = self._client
        if client is None:
            return PublishResult(False, 0, int(MQTTErrorCode.MQTT_ERR_NO_CONN))
        props: Properties | None = None
        if expiry_s is not None and self.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        if user_properties and self.protocol == "5":
            key = tuple(user_properties)
            if key != self._props_key or self._props is None:
                # Building paho Properties is slow; a telegram and its raw twin share theirs.
                self._props_key, self._props = key, PackedProperties(key)
            props = self._props
        with client.io_lock:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
            unsent = client.want_write()
        if unsent:  # the socket took only part: the network thread writes the rest
            self._wake()
        rc = info.rc
        accepted = rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0
        )
        return PublishResult(accepted, info.mid, int(rc))

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Publishes within leave together: the socket is corked (TCP_CORK) until the end, so a
        telegram's two PUBLISH packets go out in one segment and wake the broker once."""
        client = self._client
        if client is None or _TCP_CORK is None:
            yield
            return
        with client.io_lock:
            sock = client.socket()
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)  # type: ignore[union-attr]
            except (OSError, AttributeError, TypeError, ValueError):
                sock = None  # no socket now, or not TCP (a Unix or WebSocket transport)
            try:
                yield
            finally:
                if sock is not None:
                    with contextlib.suppress(OSError, ValueError):
                        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)  # type: ignore[attr-defined]

    @property
    def client(self) -> LinkClient | None:
        """paho's client of the current connection; None before `start()` (tests, diagnostics)."""
        return self._client

    def progress_time(self) -> float:
        """When the network loop last made progress (monotonic seconds).

        While connected the loop iterates at least every NETWORK_TICK_S (`loop_misc`); while
        not, it sleeps out its reconnect backoff and calls on_pre_connect on every attempt.
        """
        client = self._client
        looped = client.loop_progress if client is not None else 0.0
        return max(self.last_progress, looped)

    def progress_budget(self) -> float:
        """How old `progress_time` may get before the loop counts as stuck, in this state."""
        if self.connected:
            return CONNECTED_BUDGET_S
        return float(self.settings.reconnect_max_delay) + CONNECT_TIMEOUT_S + 10.0

    def thread_alive(self) -> bool:
        """Is the network thread running?"""
        thread = self._thread
        return bool(thread is not None and thread.is_alive())

    def revive(self) -> bool:
        """Restart the network thread if it died while we did not stop it; True if restarted."""
        with self._lock:
            client = self._client
            if self._stopping or client is None or self.thread_alive():
                return False
            self._start_thread(client)
            self.restarts += 1
            self.last_progress = self._monotonic()
            return True

    def stop(self, timeout: float = CONNECT_TIMEOUT_S + 1.0) -> None:
        """Disconnect cleanly (no last will) and end the network thread (wait `timeout` s)."""
        with self._lock:
            self._stopping = True
            self._halt.set()  # before disconnecting: the thread must not connect again
            client = self._client
            if client is not None:
                with client.io_lock, contextlib.suppress(Exception):  # best effort on shutdown
                    client.disconnect()
            self._halt_thread(timeout)
            self.connected = False
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
