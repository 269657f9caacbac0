"""The systemd notify protocol: READY, STATUS, RELOADING, STOPPING and the watchdog.

sd_notify(3) is one datagram to the AF_UNIX socket named by NOTIFY_SOCKET. systemd-python's
`daemon.notify` sends it from C while holding the GIL, and the send blocks while systemd's
receive queue is full (`net.unix.max_dgram_qlen` datagrams: 10 by default): every thread of
the daemon would stop with it. So the datagram is sent here, with `MSG_DONTWAIT`, and a send
that would block is kept for later instead (`NotifyOutbox`, no IO). Outside systemd (no
NOTIFY_SOCKET) every call is a cheap no-op, so the daemon runs the same in a terminal, a test
or a unit.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Mapping

#: State changes kept while systemd does not read (each reload adds two); the oldest go first.
MAX_PENDING = 32


class NotifyOutbox:
    """What is still to be told to systemd, coalesced (no IO, no clock).

    State changes (READY, RELOADING, STOPPING) go out in order. A STATUS is sent only when it
    differs from the last one told, and a newer STATUS replaces one not yet sent. WATCHDOG=1 is
    never kept: a ping that could not go out now is not sent later, when it may no longer be
    true; the next tick sends a fresh one.
    """

    def __init__(self) -> None:
        self._states: deque[str] = deque()
        self._status: str | None = None  # the latest STATUS not yet sent
        self._told: str | None = None  # the latest STATUS sent (or queued with a state change)
        self._watchdog = False
        self.dropped = 0

    def state(self, assignments: str, status: str | None = None) -> None:
        """Queue a state change (`READY=1`...), with the STATUS it brings."""
        if status is not None:
            assignments += f"\nSTATUS={status}"
            self._told, self._status = status, None
        self._states.append(assignments)
        while len(self._states) > MAX_PENDING:
            self._states.popleft()
            self.dropped += 1

    def status(self, status: str) -> None:
        """Queue a STATUS, unless it is the one systemd has (or will have) already."""
        pending_or_told = self._status if self._status is not None else self._told
        if status != pending_or_told:
            self._status = status

    def watchdog(self) -> None:
        """Queue one WATCHDOG=1 for the next send."""
        self._watchdog = True

    def next(self) -> bytes | None:
        """The next datagram to send, or None when nothing is waiting."""
        if self._states:
            return self._states[0].encode()
        if self._status is not None:
            return f"STATUS={self._status}".encode()
        if self._watchdog:
            return b"WATCHDOG=1"
        return None

    def sent(self) -> None:
        """The datagram from `next()` went out."""
        if self._states:
            self._states.popleft()
        elif self._status is not None:
            self._told, self._status = self._status, None
        else:
            self._watchdog = False

    def blocked(self) -> None:
        """systemd's queue is full: keep everything but the watchdog ping for the next try."""
        self._watchdog = False

    def failed(self) -> None:
        """The datagram from `next()` cannot be sent at all (not a full queue): drop it."""
        self.dropped += 1
        self.sent()  # as if told: a send that cannot work is not retried forever

    @property
    def waiting(self) -> bool:
        """Whether anything is still to be sent."""
        return self.next() is not None


def notify_address(value: str) -> str | bytes | None:
    """The socket address NOTIFY_SOCKET names: a path, or an abstract name ('@...')."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms this daemon does not speak


class Notifier:
    """Sends state changes to systemd when the daemon runs under it, never waiting for it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watched = usec is not None and (pid is None or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if watched and usec else None
        self.outbox = NotifyOutbox()
        self.sent = 0
        self.blocked = 0
        self.last_error: str | None = None
        self._address = notify_address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (NOTIFY_SOCKET names a socket this daemon can use)."""
        return self._sock is not None

    def flush(self) -> None:
        """Send what is waiting, in order, until done or systemd's queue is full."""
        if self._sock is None or self._address is None:
            return
        while (datagram := self.outbox.next()) is not None:
            try:
                self._sock.sendto(datagram, socket.MSG_DONTWAIT, self._address)
            except BlockingIOError:
                self.blocked += 1
                self.outbox.blocked()
                return
            except OSError as exc:  # no listener (ENOENT, ECONNREFUSED), too large...
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.outbox.failed()
            else:
                self.sent += 1
                self.outbox.sent()

    def ready(self, status: str) -> None:
        """Start-up (or a reload) is complete."""
        if self._sock is not None:
            self.outbox.state("READY=1", status)
            self.flush()

    def status(self, status: str) -> None:
        """A one-line status for `systemctl status` (sent only when it changed)."""
        if self._sock is not None:
            self.outbox.status(status)
            self.flush()

    def reloading(self) -> None:
        """A reload begins (systemd 252: RELOADING=1 with MONOTONIC_USEC, then READY=1)."""
        if self._sock is not None:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.outbox.state(f"RELOADING=1\nMONOTONIC_USEC={usec}", "reloading configuration")
            self.flush()

    def stopping(self) -> None:
        """Shutdown begins."""
        if self._sock is not None:
            self.outbox.state("STOPPING=1", "stopping")
            self.flush()

    def watchdog(self) -> None:
        """Tell systemd every loop made progress; call only when that is true."""
        if self._sock is not None:
            self.outbox.watchdog()
            self.flush()

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
