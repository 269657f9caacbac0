"""The status file written from a thread of its own, so that a slow disk stalls nothing else.

The main loop hands over the newest status and goes on; the writer writes the newest one it
has (an older one not yet written is skipped). How long the current write has taken is known,
so the watchdog can still tell a writer that hangs for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.daemon.statusfile import write_status_file


class StatusWriter:
    """Writes the latest status handed to it to the status file, in a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_error: str | None = None
        self.written = 0
        self._cond = threading.Condition()
        self._latest: Mapping[str, Any] | None = None
        self._busy_since: float | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="p1gw-status", daemon=True)
        self._thread.start()

    def submit(self, status: Mapping[str, Any]) -> None:
        """Write this status next (replacing one not yet written); never waits for the disk."""
        with self._cond:
            self._latest = status
            self._cond.notify()

    def busy_for(self, now: float | None = None) -> float:
        """Seconds the write in progress has taken so far (0.0 when idle)."""
        since = self._busy_since
        if since is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - since)

    def close(self, timeout: float) -> bool:
        """Write what was submitted last, then end; wait up to `timeout` s. True when done."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        """Write each newest status as it comes, until closed."""
        while True:
            with self._cond:
                while self._latest is None and not self._closing:
                    self._cond.wait()
                status, self._latest = self._latest, None
                if status is None:
                    return
                self._busy_since = time.monotonic()
            try:
                write_status_file(self.path, status)
                self.written += 1
                self.last_error = None
            except OSError as exc:
                self.last_error = str(exc)
            finally:
                self._busy_since = None
