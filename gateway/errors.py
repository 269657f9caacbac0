"""The gateway's one exception hierarchy: every error the gateway raises is a GatewayError.

IO shells translate the errors of the libraries beneath them (pyserial, paho, sqlite3,
pydantic) into these, so callers never need to know which library failed.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """The root of every error the gateway raises on purpose."""


# --- P1: framing and decoding -------------------------------------------------------------


class TelegramError(GatewayError):
    """A telegram could not be accepted as it is."""


class ChecksumError(TelegramError):
    """A telegram's CRC does not match its bytes."""

    def __init__(self, message: str, *, expected: str | None = None, computed: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.computed = computed


class DecodeError(TelegramError):
    """A frame that cannot be read as a telegram (no header, no end, unknown spec...)."""


# --- Configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration: the file, the field and what is wrong."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class ConfigError(GatewayError):
    """A configuration that is refused whole; `problems` says every reason."""

    def __init__(self, problems: list[ConfigProblem] | tuple[ConfigProblem, ...]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid configuration")


class IdentifierError(GatewayError, ValueError):
    """An identifier (rig, variant, holder) that could break a topic or a file name."""


class ScheduleError(IdentifierError):
    """A schedule that cannot be used: overlap, start not before end, naive time, bad holder."""


# --- Ports --------------------------------------------------------------------------------


class PortError(GatewayError):
    """A meter port could not be opened, or was lost while open."""

    def __init__(self, message: str, *, variant: str | None = None, port: str | None = None):
        super().__init__(message)
        self.variant = variant
        self.port = port


class PortOpenError(PortError):
    """A port could not be opened (missing device, busy, no permission, bad URL)."""


class PortLostError(PortError):
    """A port failed while open (unplugged adapter, closed network serial server)."""


# --- Publishing ---------------------------------------------------------------------------


class PublishError(GatewayError):
    """A message could not be handed to the broker."""


class TopicError(PublishError, ValueError):
    """A topic or identifier that must never reach the broker."""


class PayloadError(PublishError, ValueError):
    """A value the exact encoder refuses (float, NaN, non-str key, unknown type...)."""


class SpoolError(GatewayError):
    """The durable spool could not be read or written."""


class BrokerError(PublishError):
    """The MQTT connection failed or the broker refused us."""


class ScheduleStoreError(GatewayError):
    """The schedule followed from the broker could not be kept on disk, or read back."""


# --- The lab: reservations and accounts ---------------------------------------------------


class LabError(GatewayError):
    """`p1-gateway lab` could not do what was asked."""


class LabRefusal(LabError, ValueError):
    """Bad input or a request the rules refuse (exit 2); nothing was changed."""


class LabStoreError(LabError):
    """The lab's SQLite store could not be opened, read or written."""


class LabBrokerError(LabError):
    """The central broker could not be reached, or refused the planner."""


class DynsecError(LabBrokerError):
    """The dynamic security plugin answered a command with an error."""

    def __init__(self, command: str, error: str):
        super().__init__(f"dynamic security plugin: {command}: {error}")
        self.command = command
        self.error = error


# --- The tester's tap ---------------------------------------------------------------------


class TapError(GatewayError):
    """`p1-gateway tap` cannot serve: a local port or pty it cannot make, a bad argument."""
