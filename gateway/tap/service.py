"""The tap as a whole: MQTT in, the core, pacing, and the local outputs, on one IO thread.

Threads: paho's network loop (`gateway.tap.mqtt`, which only appends to the inbox and wakes us)
and the IO thread (`Tap.run`, the caller's: the main thread for `p1-gateway tap`). The IO
thread sleeps in one `selectors` wait over the wake-up pipe, the TCP listeners and clients and
the ptys with a backlog; it takes the inbox, asks the core what to write, and writes it to the
variant's outputs at once (or hands it to the variant's `Pacer` with `--line-rate`).

The tap's own share of a telegram's way is from its receipt in paho's callback to the return
of the last write of its last byte; `observer(delivery, done_ns, complete)` sees each frame
then (the benchmark's hook: `complete` is False when some reader could not take it all at
once and the rest waits in that reader's buffer).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.tap.core import Delivery, Pacer, TapCore
from gateway.tap.mqtt import (
    CREDENTIALS_REFUSED,
    RETRYABLE,
    SESSION_TAKEN_OVER,
    CallbackFailed,
    Connected,
    ConnectFailed,
    Inbox,
    Lost,
    Refused,
    Subscribed,
    TapClient,
    TapEvent,
)
from gateway.tap.outputs import PtyPort, TcpFanout

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

#: How often the IO thread checks that paho's thread lives, in ns.
WATCH_NS = 1_000_000_000

#: A connection lost this soon after it was made is a flap; FLAPS of them in a row are what
#: two clients with one client id look like (mosquitto 2.0 closes the older connection without
#: a DISCONNECT saying "session taken over", so paho reports a plain connection loss).
FLAP_NS = 5_000_000_000
FLAPS = 3

Observer = Callable[[Delivery, int, bool], None]


class Output(Protocol):
    """What the IO thread writes a variant's frames to."""

    name: str

    def write(self, data: bytes, *, first: bool = True, total: int = -1) -> bool:
        """Write a frame or a piece of one; True when every reader took it all at once."""
        ...

    def stats(self) -> dict[str, int]:
        """The output's counters."""
        ...

    def close(self) -> None:
        """Release the output."""
        ...


@dataclass(frozen=True, slots=True)
class TcpSpec:
    """`--tcp V=ADDR:PORT`."""

    variant: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class PtySpec:
    """`--pty V=PATH`."""

    variant: str
    path: Path


@dataclass(frozen=True, slots=True)
class TapSettings:
    """Everything `p1-gateway tap` was told."""

    host: str
    port: int
    username: str
    password: str
    rig: str
    tcp: tuple[TcpSpec, ...] = ()
    pty: tuple[PtySpec, ...] = ()
    tls_ca_file: Path | None = None
    valid_only: bool = False
    line_rate: int | None = None
    """Baud: pace each variant's bytes at line_rate / 10 bytes per second (None: at once)."""
    client_id: str | None = None
    prefix: str = "p1"

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants served, in the order first named."""
        names = [spec.variant for spec in self.tcp] + [spec.variant for spec in self.pty]
        return tuple(dict.fromkeys(names))

    def effective_client_id(self) -> str:
        """`client_id`, or the default: stable for this user, rig, host and choice of topics."""
        if self.client_id:
            return self.client_id
        return default_client_id(self.username, self.rig, self.variants, self.valid_only)


def default_client_id(
    username: str,
    rig: str,
    variants: tuple[str, ...],
    valid_only: bool,
    hostname: str | None = None,
) -> str:
    """`p1-tap-H-R-HOST-XXXXXXXX`: the same on every start with the same user, rig, host, and
    variants (the hash: two taps of one user on one host for other variants do not collide)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", hostname or socket.gethostname())[:64] or "host"
    key = ",".join(sorted(variants)) + ("|valid-only" if valid_only else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"p1-tap-{username}-{rig}-{host}-{digest}"


def _stderr(text: str) -> None:
    """Print one line on stderr (never raising: a closed stderr loses the line)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"p1-gateway tap: {text}", file=sys.stderr, flush=True)


class Tap:
    """One tap: subscribe as the holder, serve each variant's frames on its local outputs."""

    def __init__(
        self,
        settings: TapSettings,
        *,
        observer: Observer | None = None,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.say = say
        self.core = TapCore(
            rig=settings.rig,
            holder=settings.username,
            variants=settings.variants,
            valid_only=settings.valid_only,
            prefix=settings.prefix,
        )
        self.client_id = settings.effective_client_id()
        self._selector = selectors.DefaultSelector()
        self._inbox: Inbox = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        self._outputs: dict[str, list[Output]] = {v: [] for v in settings.variants}
        self._pacers: dict[str, Pacer] = {}
        if settings.line_rate is not None:
            self._pacers = {v: Pacer.for_baud(settings.line_rate) for v in settings.variants}
        self._outputs_closed = False
        self._stop = False
        self._exit = EXIT_OK
        self._unreachable = False
        self.client: TapClient | None = None
        self.connects = 0
        self._connected_ns = 0
        self._flaps = 0

    # --- set-up --------------------------------------------------------------------------

    def open(self) -> None:
        """Make every output (listeners bound, ptys and symlinks made); raises TapError."""
        try:
            for tcp in self.settings.tcp:
                fanout = TcpFanout(tcp.variant, tcp.host, tcp.port, self._selector, say=self.say)
                self._outputs[tcp.variant].append(fanout)
                self.say(f"{self.settings.rig} {tcp.variant} on {fanout.name}")
            for pty in self.settings.pty:
                port = PtyPort(pty.variant, pty.path, self._selector)
                self._outputs[pty.variant].append(port)
                self.say(f"{self.settings.rig} {pty.variant} on {port.name} ({port.device})")
        except BaseException:
            self._close_outputs()
            raise

    def outputs(self, variant: str) -> list[Output]:
        """`variant`'s outputs."""
        return list(self._outputs[variant])

    # --- running -------------------------------------------------------------------------

    def request_stop(self, code: int = EXIT_OK) -> None:
        """Stop the loop (safe from a signal handler); `run` returns `code`."""
        if not self._stop:
            self._exit = code
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        """Interrupt the IO thread's wait (a full pipe means it wakes anyway)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _drain_wake(self, _mask: int) -> None:
        """Empty the wake-up pipe."""
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _fatal(self, code: int, text: str) -> None:
        """Say why, then stop with `code`."""
        self.say(text)
        self.request_stop(code)

    def run(self) -> int:
        """Connect and serve until stopped; the exit code (0 after `request_stop()`)."""
        s = self.settings
        client = TapClient(
            host=s.host,
            port=s.port,
            username=s.username,
            password=s.password,
            client_id=self.client_id,
            topics=self.core.topics(),
            inbox=self._inbox,
            wake=self._wake,
            tls_ca_file=s.tls_ca_file,
        )
        self.client = client
        client.start()
        selector = self._selector
        pacers = self._pacers
        next_watch = time.monotonic_ns() + WATCH_NS
        while not self._stop:
            deadline = next_watch
            for pacer in pacers.values():
                due = pacer.next_due()
                if due is not None and due < deadline:
                    deadline = due
            timeout = max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            events = selector.select(timeout)
            if self._inbox:
                self._take_inbox()
            for key, mask in events:
                key.data(mask)
            if pacers:
                self._pace()
            now = time.monotonic_ns()
            if now >= next_watch:
                next_watch = now + WATCH_NS
                if client.revive():
                    self.say("the MQTT network thread had stopped: started again")
        return self._exit

    def _take_inbox(self) -> None:
        """Everything paho handed over: messages to the core and out, events to `_event`."""
        inbox = self._inbox
        feed = self.core.feed
        while inbox:
            item = inbox.popleft()
            if type(item) is tuple:
                received_ns, topic, payload, properties = item
                user_properties = getattr(properties, "UserProperty", None) or ()
                delivery = feed(topic, payload, user_properties, received_ns)
                if delivery is not None:
                    self._deliver(delivery)
            else:
                self._event(item)  # type: ignore[arg-type]

    def _deliver(self, delivery: Delivery) -> None:
        """Write a frame to its variant's outputs now, or queue it on the variant's line."""
        pacer = self._pacers.get(delivery.variant)
        if pacer is not None:
            pacer.push(delivery, delivery.received_ns)
            return
        complete = True
        for output in self._outputs[delivery.variant]:
            if not output.write(delivery.data):
                complete = False
        if self.observer is not None:
            self.observer(delivery, time.monotonic_ns(), complete)

    def _pace(self) -> None:
        """Write the paced pieces that are due."""
        now = time.monotonic_ns()
        for variant, pacer in self._pacers.items():
            due = pacer.next_due()
            if due is None or due > now:
                continue
            outputs = self._outputs[variant]
            for chunk in pacer.pop_due(now):
                complete = True
                for output in outputs:
                    if not output.write(chunk.data, first=chunk.first, total=chunk.total):
                        complete = False
                if chunk.last and self.observer is not None:
                    self.observer(chunk.delivery, time.monotonic_ns(), complete)

    def _event(self, event: TapEvent) -> None:
        """A connection event from paho's thread."""
        if self._stop:
            return  # stopping (perhaps for a refusal just said): the rest is noise
        s = self.settings
        if isinstance(event, Connected):
            self.connects += 1
            self._connected_ns = time.monotonic_ns()
            self._unreachable = False
            session = "session resumed" if event.session_present else "new session"
            self.say(
                f"connected to {s.host}:{s.port} as {s.username} "
                f"(client id {self.client_id}, {session})"
            )
        elif isinstance(event, Subscribed):
            if event.refused:
                topic, reason = event.refused[0]
                self._fatal(
                    EXIT_REFUSED,
                    f"the broker refused the subscription to {topic}: {reason} "
                    f"(user {s.username} may read only its own slot topics)",
                )
            else:
                self.say(
                    f"subscribed to rig {s.rig}, variants {', '.join(s.variants)}"
                    + (" (valid telegrams only)" if s.valid_only else "")
                )
        elif isinstance(event, Refused):
            if event.code in CREDENTIALS_REFUSED:
                self._fatal(
                    EXIT_REFUSED,
                    f"the broker refused the credentials of user {s.username}: {event.reason} "
                    "(check --username and --password-file)",
                )
            elif event.code in RETRYABLE:
                self.say(f"the broker cannot take the tap now ({event.reason}); retrying")
            else:
                self._fatal(EXIT_REFUSED, f"the broker refused the connection: {event.reason}")
        elif isinstance(event, Lost):
            if event.code == SESSION_TAKEN_OVER:
                self._fatal(
                    EXIT_FATAL,
                    f"another client connected with client id {self.client_id} and took over "
                    "the session (two taps with the same --client-id?)",
                )
            else:
                self.say(f"connection to the broker lost ({event.reason}); reconnecting")
                self._note_flap()
        elif isinstance(event, ConnectFailed):
            if not self._unreachable:
                self._unreachable = True
                tls = " or its TLS handshake failed" if s.tls_ca_file is not None else ""
                self.say(
                    f"cannot connect to the broker at {s.host}:{s.port} (unreachable, "
                    f"refused{tls}); retrying"
                )
        elif isinstance(event, CallbackFailed):
            self.say(f"an MQTT callback failed ({event.where}: {event.error}); going on")

    def _note_flap(self) -> None:
        """Count connections lost right after they were made; warn at FLAPS in a row."""
        if time.monotonic_ns() - self._connected_ns < FLAP_NS:
            self._flaps += 1
        else:
            self._flaps = 0
        if self._flaps == FLAPS:
            self.say(
                f"the broker closed the last {FLAPS} connections right after each connect: if "
                f"another tap or client uses client id {self.client_id}, the two take the "
                "session from each other (and each gets part of the messages); give each its "
                "own --client-id"
            )

    # --- the end -------------------------------------------------------------------------

    def summary(self) -> list[str]:
        """One line per variant: what was written and dropped, and each output's counters."""
        lines = []
        for variant in self.settings.variants:
            c = self.core.counters(variant)
            parts = [
                f"{variant}: {c.written} written ({c.invalid} invalid), "
                f"{c.duplicates} duplicates, {c.late} late"
            ]
            if c.unsequenced or c.malformed or c.skipped_invalid:
                parts.append(
                    f"{c.unsequenced} without seq, {c.malformed} unreadable, "
                    f"{c.skipped_invalid} invalid skipped"
                )
            pacer = self._pacers.get(variant)
            if pacer is not None and pacer.dropped:
                parts.append(f"{pacer.dropped} dropped by the line's queue")
            for output in self._outputs[variant]:
                stats = ", ".join(f"{k} {v}" for k, v in output.stats().items())
                parts.append(f"{output.name}: {stats}")
            lines.append("; ".join(parts))
        return lines

    def _close_outputs(self) -> None:
        """Close every output once (symlinks removed, listeners closed); counters stay."""
        if self._outputs_closed:
            return
        self._outputs_closed = True
        for outputs in self._outputs.values():
            for output in outputs:
                with contextlib.suppress(Exception):
                    output.close()

    def close(self) -> None:
        """Disconnect, write what paho had already handed over, close every output."""
        if self.client is not None:
            self.client.stop()
            if not self._outputs_closed:
                self._take_inbox()  # acknowledged to the broker: written before leaving
        self._close_outputs()
        with contextlib.suppress(Exception):
            self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Tap:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
