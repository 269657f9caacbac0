"""The tap's local outputs: a TCP fan-out listener and a pseudo-terminal behind a symlink.

Both are driven by the tap's one IO thread (`gateway.tap.service`) through a `selectors`
selector, and neither ever waits on a reader: every descriptor is non-blocking, and what a
reader does not take at once waits in that reader's own bounded `OutBuffer` (whole frames are
dropped, and counted, when it is full), so a slow or vanished reader holds up nobody else.

- `TcpFanout`: like ser2net's raw `tcp` accepter, every connected client gets every frame of
  the variant byte for byte, from the next frame's first byte after it connected. What a client
  sends is read and ignored (a P1 port is one-way).
- `PtyPort`: a pseudo-terminal in raw mode; the symlink at the path points at its device. It
  reads as the meter's serial port would: while no program has it open, frames are dropped
  (and counted), as a serial line nobody listens to loses its bytes; when the last reader
  closes it, what that reader left unread is discarded, so the next one starts afresh.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import TapError
from gateway.tap.core import OUTPUT_LIMIT, OutBuffer

#: At most this many TCP clients per listener; more are closed at once.
MAX_CLIENTS = 32

#: What one read of a client's (ignored) input takes.
_DISCARD_SIZE = 4096

Handler = Callable[[int], None]


def _writer(write: Callable[[memoryview], int]) -> Callable[[memoryview], int]:
    """A write that returns 0 instead of raising when the descriptor takes nothing now."""

    def attempt(view: memoryview) -> int:
        try:
            return write(view)
        except (BlockingIOError, InterruptedError):
            return 0

    return attempt


@dataclass(slots=True)
class _Client:
    """One connected TCP client."""

    sock: socket.socket
    peer: str
    buffer: OutBuffer
    write: Callable[[memoryview], int]
    joined: bool = False
    """Set at the first frame start after connecting: frames are only ever sent whole."""
    writing: bool = False
    """Registered for writability (its buffer holds bytes)."""


class TcpFanout:
    """A listener for one variant: every frame to every connected client, byte for byte."""

    def __init__(
        self,
        variant: str,
        host: str,
        port: int,
        selector: selectors.BaseSelector,
        *,
        limit: int = OUTPUT_LIMIT,
        say: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.variant = variant
        self.selector = selector
        self.limit = limit
        self.say = say
        try:
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, address = infos[0]
            self.listener = socket.create_server(address, family=family, backlog=16)
        except (OSError, IndexError, UnicodeError) as exc:
            raise TapError(f"cannot listen on {host}:{port} for {variant}: {exc}") from exc
        self.listener.setblocking(False)
        bound = self.listener.getsockname()
        self.host, self.port = str(bound[0]), int(bound[1])
        self.name = f"tcp {self.host}:{self.port}"
        self.clients: dict[int, _Client] = {}
        self.accepted = 0
        self.refused = 0
        self.closed_clients = 0
        self.dropped = 0
        """Frames dropped for clients that did not keep up (over all clients)."""
        self.ignored_bytes = 0
        selector.register(self.listener, selectors.EVENT_READ, self._on_accept)

    # --- clients -------------------------------------------------------------------------

    def _on_accept(self, _mask: int) -> None:
        """Take every waiting connection."""
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: leave it waiting, say so
                self.say(f"{self.variant}: {self.name}: cannot accept: {exc}")
                return
            if len(self.clients) >= MAX_CLIENTS:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(
                sock, f"{peer[0]}:{peer[1]}", OutBuffer(self.limit), _writer(sock.send)
            )
            self.clients[sock.fileno()] = client
            self.accepted += 1
            self.say(f"reader {client.peer} connected ({self.variant}, {self.name})")
            self.selector.register(sock, selectors.EVENT_READ, self._handler(client))

    def _on_client(self, client: _Client, mask: int) -> None:
        """A client is readable (input to ignore, or its end) or writable (its backlog)."""
        if client.sock.fileno() < 0:
            return  # dropped earlier in the same round of events
        try:
            if mask & selectors.EVENT_READ:
                data = client.sock.recv(_DISCARD_SIZE)
                if not data:
                    self._drop(client)
                    return
                self.ignored_bytes += len(data)
            if mask & selectors.EVENT_WRITE and client.buffer.flush(client.write):
                client.writing = False
                self.selector.modify(client.sock, selectors.EVENT_READ, self._handler(client))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)

    def _handler(self, client: _Client) -> Handler:
        """The selector callback of `client`."""
        return lambda mask: self._on_client(client, mask)

    def _drop(self, client: _Client) -> None:
        """Forget a client that left (or failed)."""
        fd = client.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(client.sock)
            self.clients.pop(fd, None)
        else:
            for key, value in list(self.clients.items()):
                if value is client:
                    del self.clients[key]
        self.dropped += client.buffer.dropped
        self.closed_clients += 1
        self.say(f"reader {client.peer} left ({self.variant}, {self.name})")
        with contextlib.suppress(OSError):
            client.sock.close()

    # --- frames --------------------------------------------------------------------------

    def write(self, data: bytes, *, first: bool = True, total: int = -1) -> bool:
        """Send a frame (or a piece of one) to every client; True when all took it at once."""
        complete = True
        for client in list(self.clients.values()):
            if not client.joined:
                if not first:
                    continue
                client.joined = True
            buffer = client.buffer
            try:
                buffer.offer(data, client.write, first=first, total=total)
            except OSError:
                self._drop(client)
                continue
            if buffer.pending:
                complete = False
                if not client.writing:
                    client.writing = True
                    self.selector.modify(
                        client.sock,
                        selectors.EVENT_READ | selectors.EVENT_WRITE,
                        self._handler(client),
                    )
        return complete

    def stats(self) -> dict[str, int]:
        """Counters: clients now, accepted, refused, closed; frames dropped for slow clients."""
        dropped = self.dropped + sum(c.buffer.dropped for c in self.clients.values())
        return {
            "clients": len(self.clients),
            "accepted": self.accepted,
            "refused": self.refused,
            "closed": self.closed_clients,
            "dropped": dropped,
        }

    def close(self) -> None:
        """Close every client and the listener."""
        for client in list(self.clients.values()):
            self._drop(client)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(self.listener)
        self.listener.close()


class PtyPort:
    """A pseudo-terminal in raw mode behind a symlink: reads as the meter's serial port would."""

    def __init__(
        self,
        variant: str,
        link: Path,
        selector: selectors.BaseSelector,
        *,
        limit: int = OUTPUT_LIMIT,
    ) -> None:
        self.variant = variant
        self.link = Path(link)
        self.selector = selector
        self.name = f"pty {self.link}"
        if self.link.exists() and not self.link.is_symlink():
            raise TapError(f"{self.link} exists and is not a symlink: refusing to replace it")
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise TapError(f"cannot open a pseudo-terminal for {variant}: {exc}") from exc
        try:
            tty.setraw(slave)
            self.device = os.ttyname(slave)
            os.set_blocking(master, False)
        except (OSError, termios.error) as exc:
            os.close(master)
            raise TapError(f"cannot set up the pseudo-terminal for {variant}: {exc}") from exc
        finally:
            os.close(slave)  # only readers hold the slave open: its hang-up says "nobody reads"
        self.master = master
        try:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)
        except OSError as exc:
            os.close(master)
            raise TapError(f"cannot make the symlink {self.link}: {exc}") from exc
        self._poll = select.poll()
        self._poll.register(master, select.POLLIN)
        self.buffer = OutBuffer(limit)
        self._write = _writer(lambda view: os.write(self.master, view))
        self._reader = False
        self._writing = False
        self.readers = 0
        """Times a reader opened the port."""
        self.no_reader = 0
        """Frames dropped because no program had the port open."""
        self.discarded_bytes = 0
        """Bytes a departed reader left unread (discarded), or left waiting when it went."""
        self.ignored_bytes = 0
        """Bytes a reader wrote to the port (ignored: P1 is one-way)."""

    def _state(self) -> int:
        """The master's poll events now (POLLHUP: no reader has the port open)."""
        events = self._poll.poll(0)
        return events[0][1] if events else 0

    def _reader_left(self) -> None:
        """The last reader closed the port: forget its backlog and what it left unread."""
        self._reader = False
        self.discarded_bytes += self.buffer.clear()
        if self._writing:
            self._writing = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.master)
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error:
            pass
        finally:
            os.close(fd)

    def _drain_input(self) -> None:
        """Read and ignore what the reader wrote to the port."""
        with contextlib.suppress(OSError):
            while True:
                data = os.read(self.master, _DISCARD_SIZE)
                if not data:
                    return
                self.ignored_bytes += len(data)

    def write(self, data: bytes, *, first: bool = True, total: int = -1) -> bool:
        """Write a frame (or a piece of one); True when it was all written (or dropped) now."""
        state = self._state()
        if state & select.POLLHUP:
            if self._reader:
                self._reader_left()
            if first:
                self.no_reader += 1
            return True
        if not self._reader:
            self._reader = True
            self.readers += 1
        if state & select.POLLIN:
            self._drain_input()
        buffer = self.buffer
        try:
            buffer.offer(data, self._write, first=first, total=total)
        except OSError:  # EIO: the reader went between the poll and the write
            self._reader_left()
            return True
        if buffer.pending and not self._writing:
            self._writing = True
            self.selector.register(self.master, selectors.EVENT_WRITE, self._on_writable)
        return not buffer.pending

    def _on_writable(self, _mask: int) -> None:
        """The reader took bytes (or went away): write what waits."""
        if self._state() & select.POLLHUP:
            self._reader_left()
            return
        try:
            done = self.buffer.flush(self._write)
        except OSError:
            self._reader_left()
            return
        if done and self._writing:
            self._writing = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.master)

    def stats(self) -> dict[str, int]:
        """Counters: reader opens, frames dropped with no reader or for a slow reader."""
        return {
            "readers": self.readers,
            "no_reader": self.no_reader,
            "dropped": self.buffer.dropped,
            "discarded_bytes": self.discarded_bytes,
        }

    def close(self) -> None:
        """Remove the symlink (if still ours) and close the master: readers see an unplug."""
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.device:
                self.link.unlink()
        if self._writing:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
