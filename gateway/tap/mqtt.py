"""The tap's MQTT side: a paho-mqtt 2.x client with a persistent MQTT 5 session of its own.

The session (clean start off, a session expiry interval, a fixed client id) makes the broker
keep the holder's messages while the tap is away (up to the broker's `max_queued_messages`), and
redeliver what was not acknowledged: the core drops those duplicates by seq.

paho's network loop runs in a thread of ours (`loop_forever`, which reconnects by itself), so
its liveness can be watched and the thread started again should it die. Nothing in a callback
waits: a message is appended, with the monotonic time of its receipt, to the tap's inbox (a
deque) and the IO thread is woken; connection events go the same way.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.errors import TapError
from gateway.threadnames import name_this_thread

#: The broker keeps the tap's session (its subscriptions and queued messages) this long after
#: the tap disconnects: a day, the length of a slot.
SESSION_EXPIRY_S = 24 * 3600

#: Seconds between keep-alive pings.
KEEPALIVE_S = 30

#: paho's reconnect back-off, in seconds.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30

#: CONNACK reasons that mean the credentials (or the account) are refused.
CREDENTIALS_REFUSED = frozenset({0x86, 0x87, 0x8A, 0x8C})
#: CONNACK reasons worth trying again later (the broker is busy or unavailable for now).
RETRYABLE = frozenset({0x88, 0x89, 0x97, 0x9F})
#: DISCONNECT reason: another client connected with this client id.
SESSION_TAKEN_OVER = 0x8E


@dataclass(frozen=True, slots=True)
class Connected:
    """The broker accepted the tap; `session_present`: it kept the session from before."""

    session_present: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """The broker answered CONNECT with a failure."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK: the topics the broker refused, with its reasons (none: all granted)."""

    refused: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection ended."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """A connection attempt failed before the broker answered (refused, unreachable, TLS)."""


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """One of the tap's paho callbacks raised; it was caught so paho's thread lives on."""

    where: str
    error: str


TapEvent = Connected | Refused | Subscribed | Lost | ConnectFailed | CallbackFailed

#: What the inbox holds: (receipt monotonic ns, topic, payload, paho properties) or an event.
Inbox = deque[tuple[int, str, bytes, Any] | TapEvent]


def _code(reason_code: Any) -> int:
    """A paho ReasonCode (or plain int) as an int."""
    value = getattr(reason_code, "value", reason_code)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class TapClient:
    """The holder's subscriber: connects, subscribes on every connect, hands messages off."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        topics: Sequence[str],
        inbox: Inbox,
        wake: Callable[[], None],
        tls_ca_file: Path | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
        keepalive_s: int = KEEPALIVE_S,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.topics = tuple(topics)
        self.inbox = inbox
        self.wake = wake
        self.keepalive_s = keepalive_s
        self.restarts = 0
        """Times the network thread was found dead and started again."""
        self._stopping = False
        self._thread: threading.Thread | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        client.suppress_exceptions = True
        if tls_ca_file is not None:
            try:
                client.tls_set(ca_certs=str(tls_ca_file))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TapError(f"TLS set-up with {tls_ca_file} failed: {exc}") from exc
        client.username_pw_set(username, password)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._properties.SessionExpiryInterval = session_expiry_s
        self.client = client

    # --- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and serve."""
        try:
            self.client.connect_async(
                self.host,
                self.port,
                keepalive=self.keepalive_s,
                clean_start=False,
                properties=self._properties,
            )
        except (OSError, ValueError) as exc:
            raise TapError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._start_thread()

    def _start_thread(self) -> None:
        """Run paho's loop (connects, reads, reconnects) in a thread of ours."""
        self._thread = threading.Thread(target=self._network, name="p1tap-mqtt", daemon=True)
        self._thread.start()

    def _network(self) -> None:
        """paho's loop until stopped."""
        name_this_thread("p1tap-mqtt")
        with contextlib.suppress(Exception):  # the watch notices and starts it again
            self.client.loop_forever(retry_first_connection=True)

    def alive(self) -> bool:
        """Is the network thread running (or deliberately stopped)?"""
        thread = self._thread
        return self._stopping or (thread is not None and thread.is_alive())

    def revive(self) -> bool:
        """Start the network thread again if it died while not stopped; True if it was."""
        if self.alive():
            return False
        self.restarts += 1
        self._start_thread()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Disconnect (the broker keeps the session) and end the network thread."""
        self._stopping = True
        with contextlib.suppress(Exception):
            self.client.disconnect()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- callbacks (paho's thread: never block, never raise) ------------------------------

    def _put(self, event: TapEvent) -> None:
        """Hand an event to the IO thread."""
        self.inbox.append(event)
        self.wake()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        """A message: its receipt time, topic, payload and properties to the IO thread."""
        received_ns = time.monotonic_ns()
        try:
            self.inbox.append((received_ns, message.topic, message.payload, message.properties))
            self.wake()
        except Exception as exc:
            self._failed("on_message", exc)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        """CONNACK: subscribe (again: a session the broker lost has none) or report why not."""
        try:
            code = _code(reason_code)
            if code != 0:
                self._put(Refused(code, str(reason_code)))
                return
            self._put(Connected(bool(getattr(flags, "session_present", False))))
            client.subscribe([(topic, 1) for topic in self.topics])
        except Exception as exc:
            self._failed("on_connect", exc)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        """SUBACK: report the topics refused, if any."""
        try:
            refused = tuple(
                (topic, str(rc))
                for topic, rc in zip(self.topics, reason_codes, strict=False)
                if _code(rc) >= 0x80
            )
            self._put(Subscribed(refused))
        except Exception as exc:
            self._failed("on_subscribe", exc)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        """A connection attempt failed before any CONNACK."""
        try:
            self._put(ConnectFailed())
        except Exception as exc:
            self._failed("on_connect_fail", exc)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        """The connection ended (paho reconnects by itself unless we stop)."""
        try:
            if not self._stopping:
                self._put(Lost(_code(reason_code), str(reason_code)))
        except Exception as exc:
            self._failed("on_disconnect", exc)

    def _failed(self, where: str, exc: BaseException) -> None:
        """Report a callback that raised."""
        with contextlib.suppress(Exception):
            self._put(CallbackFailed(where, f"{type(exc).__name__}: {exc}"))
