"""The IO shell around pyserial: open a port with its profile, read it, close it.

pyserial and OS errors are translated into `PortOpenError` / `PortLostError` here, so the
reader loop deals with the gateway's own errors only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import termios
from dataclasses import dataclass
from typing import Any

import serial

from gateway.errors import PortLostError, PortOpenError
from gateway.mux.profile import PortConfig

#: Errors a device without modem lines (a pseudo-terminal) answers a request-line ioctl with.
NO_MODEM_LINES_ERRNOS = frozenset({errno.ENOTTY, errno.EINVAL})
#: What pyserial and the OS raise on a port that fails.
SERIAL_ERRORS: tuple[type[BaseException], ...] = (
    serial.SerialException,
    OSError,
    termios.error,
    ValueError,
)


@dataclass(slots=True)
class OpenPort:
    """An open port: the pyserial object, and its file descriptor when it has one."""

    serial: Any
    fd: int | None
    """A non-blocking descriptor to select on and os.read; None: poll through pyserial."""
    request_line_held: bool | None

    def close(self) -> None:
        """Close the port, ignoring errors (it may already be gone)."""
        with contextlib.suppress(Exception):  # a dead port may fail to close in many ways
            self.serial.close()


def open_port(config: PortConfig) -> OpenPort:
    """Open a configured port with its serial profile; raise PortOpenError on any failure.

    Device paths are opened with exclusive=True (flock). Any pyserial URL works; a handler
    without a file descriptor (rfc2217://, loop://) is read by polling.
    """
    profile = config.profile
    kwargs: dict[str, Any] = {
        "baudrate": profile.baudrate,
        "bytesize": profile.bytesize,
        "parity": profile.parity,
        "stopbits": profile.stopbits,
        "timeout": 0,
    }
    if config.is_device_path:
        kwargs["exclusive"] = True
    try:
        port = serial.serial_for_url(config.url, do_not_open=True, **kwargs)
        port.open()
    except SERIAL_ERRORS as exc:
        raise PortOpenError(
            f"cannot open {config.url}: {_describe(exc)}", variant=config.variant, port=config.url
        ) from exc
    opened = OpenPort(port, None, None)
    try:
        opened.request_line_held = _hold_request_line(port, config.request_line)
        opened.fd = _descriptor(port)
        if opened.fd is not None:
            os.set_blocking(opened.fd, False)
    except SERIAL_ERRORS as exc:
        opened.close()
        raise PortOpenError(
            f"cannot set up {config.url}: {_describe(exc)}",
            variant=config.variant,
            port=config.url,
        ) from exc
    return opened


def path_missing(config: PortConfig) -> bool:
    """Whether the port's device path is not there: nothing can open it until it appears, so it
    is watched, not retried. A path that is there but does not open (busy, no permission,
    ENODEV or ENXIO: no device behind the node) is retried on the backoff instead."""
    return config.is_device_path and not os.path.exists(config.url)


def describe_open_failure(error: BaseException | None) -> str:
    """The text an open attempt's failure is reported with: a `PortOpenError`'s own message,
    the representation of anything else an opener raised."""
    return str(error) if isinstance(error, PortOpenError) else repr(error)


def _hold_request_line(port: Any, line: str | None) -> bool | None:
    """Set the data-request line high; False when the device has no modem lines."""
    if line is None:
        return None
    try:
        setattr(port, line, True)
    except OSError as exc:
        if exc.errno in NO_MODEM_LINES_ERRNOS:
            return False
        raise
    return True


def _descriptor(port: Any) -> int | None:
    """The port's file descriptor, or None when its handler has none to select on."""
    try:
        fd = port.fileno()
    except Exception:
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def read_fd(fd: int, size: int, variant: str, url: str) -> bytes:
    """One non-blocking read, made after the selector reported readiness.

    Returns the bytes (b'' only on EAGAIN); raises PortLostError when the port is gone. End of
    file after readiness is a loss: a pty gives it when its master closes (the Linux answer to
    an unplug), a socket when its peer closes. (A tty opened by pyserial with timeout=0 has
    VMIN=0 and VTIME=0, so a read without readiness also returns 0 bytes: never call this
    without it.)
    """
    try:
        data = os.read(fd, size)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError as exc:
        raise PortLostError(f"read failed: {_describe(exc)}", variant=variant, port=url) from exc
    if not data:
        raise PortLostError("device disconnected (end of file on read)", variant=variant, port=url)
    return data


def poll_read(port: OpenPort, variant: str) -> bytes:
    """Read what a descriptor-less port has buffered, without waiting; PortLostError if dead."""
    try:
        waiting = port.serial.in_waiting
        data: bytes = port.serial.read(waiting or 1)
    except SERIAL_ERRORS as exc:
        raise PortLostError(
            f"read failed: {_describe(exc)}", variant=variant, port=str(port.serial.port)
        ) from exc
    return data


def _describe(exc: BaseException) -> str:
    """A short, human text for a pyserial or OS error (no repeated port names)."""
    number = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and isinstance(number, int):
        text = os.strerror(number)
        if "exclusively lock" in str(exc):
            text = f"in use by another process ({text})"
        return f"{text} (errno {number})"
    return str(exc) or type(exc).__name__
