"""Writing log lines without ever waiting long: journald's native protocol and stream sinks.

Both ends a log line can go to under systemd are sockets that block when journald does not
read: the journal's datagram socket (its receive queue holds `net.unix.max_dgram_qlen`
datagrams) and the stream socket behind stderr (JOURNAL_STREAM). Every write here is
non-blocking, waits for room with the GIL released, and gives up at a deadline.
"""

from __future__ import annotations

import os
import re
import select
import socket
import stat
import struct
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

#: Where journald listens for its native protocol (systemd-journald.service(8)).
JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: A field value longer than this is cut (the datagram must fit the socket's send buffer).
MAX_FIELD_BYTES = 16 * 1024

_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


def journal_field_name(key: str) -> str:
    """A journald field name for a log key: upper case, [A-Z0-9_], not starting with '_'."""
    name = _FIELD_BAD.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name


def journal_fields(event: MutableMapping[str, Any], identifier: str) -> dict[str, str]:
    """The journal entry of a log event: MESSAGE, PRIORITY, the identifier, a field per key."""
    message = str(event.get("event", ""))
    level = str(event.get("level", "info"))
    keys = {k: v for k, v in event.items() if k not in ("event", "level", "timestamp")}
    text = message + "".join(f" {k}={v}" for k, v in keys.items() if k != "exception")
    if "exception" in keys:
        text += "\n" + str(keys["exception"])
    fields = {
        "MESSAGE": text,
        "PRIORITY": str(_PRIORITY.get(level, 6)),
        "SYSLOG_IDENTIFIER": identifier,
        "EVENT": message,
    }
    for key, value in keys.items():
        fields.setdefault(journal_field_name(key), str(value))
    return fields


def journal_datagram(fields: Mapping[str, str]) -> bytes:
    """One native-protocol datagram: `KEY=value` lines; a value with a newline is sized.

    A value holding a newline is written as the name, a newline, its length as a 64-bit
    little-endian integer, the value and a newline (systemd's "Native Journal Protocol").
    """
    parts = []
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")[:MAX_FIELD_BYTES]
        name = key.encode("ascii")
        if b"\n" in data:
            parts.append(name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name + b"=" + data + b"\n")
    return b"".join(parts)


class JournalSocket:
    """journald's datagram socket: a send waits at most `timeout` s for room, GIL released."""

    def __init__(self, path: str | None = None, timeout: float = 0.5) -> None:
        self.path = path or JOURNAL_SOCKET
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def send(self, datagram: bytes) -> bool:
        """Send one datagram; False when journald is not there or did not take it in time."""
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(self._timeout)  # non-blocking fd; waits poll without the GIL
                try:
                    sock.connect(self.path)  # connected: poll then tells when there is room
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
            self._sock.send(datagram)
        except TimeoutError:
            return False
        except OSError:  # journald restarted (ECONNREFUSED), gone (ENOENT)...: reconnect next
            self.close()
            return False
        return True

    def close(self) -> None:
        """Forget the connection (the next send makes a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class NonBlockingStream:
    """An output stream (stderr) written without blocking and without changing it for others.

    O_NONBLOCK belongs to the open file, which stderr shares with the parent shell or
    systemd, so it is not set on it. A socket (journald's stream) is written with
    MSG_DONTWAIT; a pipe or terminal is opened anew through /proc, non-blocking; a regular
    file is written as it is (a write there never waits for a reader).
    """

    def __init__(self, fd: int = 2) -> None:
        self._sock: socket.socket | None = None
        self._fd = -1
        self._cut = False  # the last write gave up mid-line: start the next on a new line
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=os.dup(fd))  # flags untouched: MSG_DONTWAIT
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            try:
                self._fd = os.open(f"/proc/self/fd/{fd}", flags)
            except OSError:
                self._fd = os.dup(fd)
        else:
            self._fd = os.dup(fd)

    def close(self) -> None:
        """Close this object's own descriptor (the stream it reopened or duplicated)."""
        if self._sock is not None:
            self._sock.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        """The descriptor written to."""
        return self._sock.fileno() if self._sock is not None else self._fd

    def write(self, data: bytes, timeout: float) -> bool:
        """Write all of `data` within `timeout` s; False (and a cut line) when it could not."""
        if self._cut:
            data = b"\n" + data
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                if self._sock is not None:
                    sent = self._sock.send(view, socket.MSG_DONTWAIT)
                else:
                    sent = os.write(self._fd, view)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not _wait_writable(self.fileno(), left):
                    self._cut = len(view) < len(data)
                    return False
                continue
            except OSError:
                self._cut = len(view) < len(data)
                return False
            view = view[sent:]
        self._cut = False
        return True


def _wait_writable(fd: int, timeout: float) -> bool:
    """Wait (GIL released) up to `timeout` s for room to write on `fd`."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(timeout * 1000))
