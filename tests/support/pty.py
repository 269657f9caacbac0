"""Reusable helpers for tests on real pseudo-terminals (and other real-time waits).

- `wait_until(predicate, timeout)`: poll with a deadline instead of sleeping a fixed time.
- `PtyPair`: a raw pty whose master the test writes to as a meter would; closing the master
  is a faithful unplug.
- `PtyReader`: a background reader of a pty path (or symlink), collecting every byte, as the
  gateway would read it.
- `rss_bytes()`, `open_fd_count()`: memory and descriptor use of this process, from /proc.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str = "condition",
) -> None:
    """Poll `predicate` until it is truthy; fail the test with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {message}")
        time.sleep(interval)


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


class PtyPair:
    """A raw pseudo-terminal: the test writes to `master`, the code under test opens `path`."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes, timeout: float = 10.0) -> None:
        """Write all of `data`, waiting (with a deadline) while the pty buffer is full."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.master, view[:65536])
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("nobody reads the pty") from None
                time.sleep(0.001)
                continue
            view = view[n:]

    def close_master(self) -> None:
        """Unplug: close the master (and our slave end); readers see end of file."""
        for fd in (self.master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self._slave = -1

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_master()


class PtyReader:
    """Reads a pty path in a background thread, keeping every byte (until end of file)."""

    def __init__(self, path: str | Path) -> None:
        self.fd = os.open(str(path), os.O_RDONLY | os.O_NOCTTY)
        tty.setraw(self.fd)
        self._data = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        """(time.monotonic(), bytes read so far) after every read."""
        self._lock = threading.Lock()
        self.eof = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Read until end of file, an error, or close()."""
        while not self._stop:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                return
            with self._lock:
                self._data += chunk
                self.arrivals.append((time.monotonic(), len(self._data)))

    @property
    def data(self) -> bytes:
        """Everything read so far."""
        with self._lock:
            return bytes(self._data)

    def close(self) -> None:
        """Stop reading and close the descriptor."""
        self._stop = True
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def __enter__(self) -> PtyReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
