"""Logging set-up, resolved once: readable lines for a person, JSON for machines, journald fields.

`configure_logging(fmt, level)` picks the renderer once at start-up; every module then logs
through `structlog.get_logger()` with key-value pairs. Under systemd (JOURNAL_STREAM set) the
"auto" format writes straight to the journal, each key as a journal field (`VARIANT=...`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["auto", "console", "json", "journal"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_JOURNAL_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


def resolve_format(fmt: LogFormat, *, isatty: bool | None = None) -> LogFormat:
    """Resolve "auto": journal under systemd, console on a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    if os.environ.get("JOURNAL_STREAM") and _journal_available():
        return "journal"
    tty = sys.stderr.isatty() if isatty is None else isatty
    return "console" if tty else "json"


def _journal_available() -> bool:
    """Whether systemd-python's journal module can be imported."""
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True


def journal_field_name(key: str) -> str:
    """A journald field name for a log key: upper case, [A-Z0-9_], not starting with '_'."""
    name = _FIELD_BAD.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name


class JournalRenderer:
    """A structlog renderer that sends each event to journald with its keys as fields."""

    def __init__(self, identifier: str = "p1-gateway") -> None:
        import systemd.journal as journal

        self._send = journal.send
        self._identifier = identifier

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        """Send the event to the journal; return the message for any later processor."""
        message = str(event_dict.pop("event", ""))
        level = str(event_dict.pop("level", method))
        fields = {journal_field_name(k): str(v) for k, v in event_dict.items() if k != "timestamp"}
        text = message + "".join(f" {k}={v}" for k, v in event_dict.items() if k != "timestamp")
        self._send(
            MESSAGE=text,
            PRIORITY=str(_JOURNAL_PRIORITY.get(level, 6)),
            SYSLOG_IDENTIFIER=self._identifier,
            EVENT=message,
            **fields,
        )
        return text


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> LogFormat:
    """Configure structlog once for the whole process; return the format chosen."""
    chosen = resolve_format(fmt)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
    ]
    if chosen == "journal":
        processors.append(JournalRenderer())
        factory: Any = structlog.ReturnLoggerFactory()
    elif chosen == "json":
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ]
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    return chosen
