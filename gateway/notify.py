"""The systemd notify protocol: READY, STATUS, RELOADING, STOPPING and the watchdog.

A thin shell over sd_notify(3) (systemd-python). Outside systemd (no NOTIFY_SOCKET) every call
is a cheap no-op, so the daemon runs the same in a terminal, a test or a unit.
"""

from __future__ import annotations

import os
import time

from gateway.errors import GatewayError


class Notifier:
    """Sends state changes to systemd when the daemon runs under it."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watched = usec is not None and (pid is None or pid == str(os.getpid()))
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if watched and usec else None
        self.sent: int = 0
        self._notify = None
        if self.enabled:
            try:
                import systemd.daemon as daemon
            except ImportError as exc:  # a broken install: say so instead of going silent
                raise GatewayError(
                    f"NOTIFY_SOCKET is set but systemd-python is missing: {exc}"
                ) from exc
            self._notify = daemon.notify

    def _send(self, message: str) -> None:
        """Send one notify message (no-op outside systemd)."""
        if self._notify is not None:
            self._notify(message)
            self.sent += 1

    def ready(self, status: str) -> None:
        """Start-up (or a reload) is complete."""
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for `systemctl status`."""
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        """A reload begins (systemd 252: RELOADING=1 with MONOTONIC_USEC, then READY=1)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading configuration")

    def stopping(self) -> None:
        """Shutdown begins."""
        self._send("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> None:
        """Tell systemd every loop made progress; call only when that is true."""
        self._send("WATCHDOG=1")
