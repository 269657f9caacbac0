"""Logging set-up, resolved once: readable lines for a person, JSON for machines, journald fields.

`configure_logging(fmt, level)` picks the sink once at start-up (and again at a reload); every
module then logs through `structlog.get_logger()` with key-value pairs, and the standard
library's `logging` (the multiplexer, paho) is routed the same way.

No thread but one ever writes to a sink. A log call takes its timestamp and hands the event
to a bounded queue without waiting; the logging thread renders it and writes it with sends
that release the GIL and give up after `LINE_TIMEOUT_S` (journald stuck behind a slow SD
card, a terminal nobody reads). A full queue drops the event and counts it: the count is in
the daemon's status and in the next line that gets through (`log_dropped=N`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog

from gateway.daemon.logsink import (
    JournalSocket,
    NonBlockingStream,
    journal_datagram,
    journal_fields,
)

LogFormat = Literal["auto", "console", "json", "journal"]

#: Events waiting for the logging thread; one more is dropped and counted.
QUEUE_SIZE = 1000
#: How long the logging thread waits for a sink to take one line before dropping it.
LINE_TIMEOUT_S = 0.5
#: How long the process waits at exit for queued lines to be written.
EXIT_DRAIN_S = 0.5

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

Event = MutableMapping[str, Any]


def resolve_format(fmt: LogFormat, *, isatty: bool | None = None, fd: int = 2) -> LogFormat:
    """Resolve "auto": journal under systemd, console on a terminal, JSON otherwise."""
    if fmt != "auto":
        return fmt
    if os.environ.get("JOURNAL_STREAM"):
        return "journal"
    tty = os.isatty(fd) if isatty is None else isatty
    return "console" if tty else "json"


class Sink(Protocol):
    """Where the logging thread writes rendered events."""

    def write(self, event: Event) -> bool:
        """Write one event; False when it had to be dropped (the sink did not take it)."""
        ...

    def close(self) -> None:
        """Release what the sink holds."""
        ...


class StreamSink:
    """Lines on a stream (stderr: a terminal, a pipe, or journald's stream socket)."""

    def __init__(self, render: Callable[[Event], str], fd: int = 2) -> None:
        self._render = render
        self._out = NonBlockingStream(fd)

    def write(self, event: Event) -> bool:
        """Render the event as one line and write it, giving up after `LINE_TIMEOUT_S`."""
        line = self._render(event) + "\n"
        return self._out.write(line.encode("utf-8", "replace"), LINE_TIMEOUT_S)

    def close(self) -> None:
        """Close this sink's own descriptor (the stream itself stays open)."""
        self._out.close()


class JournalSink:
    """journald's native protocol: each event one datagram, its keys as journal fields."""

    def __init__(self, identifier: str = "p1-gateway", socket_path: str | None = None) -> None:
        self._identifier = identifier
        self._socket = JournalSocket(socket_path, LINE_TIMEOUT_S)

    def write(self, event: Event) -> bool:
        """Send the event to the journal, giving up after `LINE_TIMEOUT_S`."""
        return self._socket.send(journal_datagram(journal_fields(event, self._identifier)))

    def close(self) -> None:
        """Close the socket."""
        self._socket.close()


def json_line(event: Event) -> str:
    """One JSON object (structlog's JSON renderer)."""
    return str(structlog.processors.JSONRenderer()(None, "", event))


def console_renderer(colors: bool) -> Callable[[Event], str]:
    """Readable lines: the local time of day, the level, the event, its keys."""
    render = structlog.dev.ConsoleRenderer(colors=colors)

    def line(event: Event) -> str:
        stamp = event.get("timestamp")
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                local = datetime.fromisoformat(stamp).astimezone()
                event["timestamp"] = local.strftime("%H:%M:%S")
        return str(render(None, "", event))

    return line


def sink_for(fmt: LogFormat, fd: int = 2) -> Sink:
    """The sink a resolved format writes to."""
    if fmt == "journal":
        return JournalSink()
    if fmt == "json":
        return StreamSink(json_line, fd)
    return StreamSink(console_renderer(colors=os.isatty(fd)), fd)


class LogPipe:
    """A bounded queue of events and the one thread that writes them to the sink."""

    def __init__(self, sink: Sink, size: int = QUEUE_SIZE) -> None:
        self._sink = sink
        self._retired: list[Sink] = []  # replaced sinks, for the logging thread to close
        self._queue: queue.Queue[Event] = queue.Queue(size)
        self._lock = threading.Lock()
        self._dropped = 0  # since the start
        self._stuck = False  # the last write did not get through
        self._unreported = 0  # since the last line that got through
        self._thread = threading.Thread(target=self._run, name="p1gw-log", daemon=True)
        self._thread.start()

    @property
    def stuck(self) -> bool:
        """Whether the sink did not take the last event (waiting for it at exit is pointless)."""
        return self._stuck

    @property
    def dropped(self) -> int:
        """Events dropped since the start: the queue was full, or the sink did not take them."""
        return self._dropped

    def set_sink(self, sink: Sink) -> None:
        """Write to another sink from the next event on (the old one is closed then)."""
        with self._lock:
            self._retired.append(self._sink)
            self._sink = sink

    def put(self, event: Event) -> None:
        """Queue an event without waiting; a full queue drops it and counts it."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count_drop()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s for every queued event to be written; False when some were
        not: time ran out, or the sink is not taking lines (then waiting is pointless)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline or self._stuck:
                return False
            time.sleep(0.01)
        return True

    def _count_drop(self) -> None:
        """Count one dropped event."""
        with self._lock:
            self._dropped += 1
            self._unreported += 1

    def _run(self) -> None:
        """Write events as they come, saying in the first line after a loss how many were lost."""
        while True:
            event = self._queue.get()
            with self._lock:
                current, retired, self._retired = self._sink, self._retired, []
            for old in retired:  # only this thread writes to sinks: none is in use now
                old.close()
            try:
                with self._lock:
                    lost, self._unreported = self._unreported, 0
                if lost:
                    event["log_dropped"] = lost
                try:
                    written = current.write(event)
                except Exception:  # a renderer's bug must not end logging
                    written = False
                self._stuck = not written
                if not written:
                    with self._lock:
                        self._unreported += lost
                    self._count_drop()
            finally:
                self._queue.task_done()


class QueueLogger:
    """structlog's logger at the end of the chain: hands each event dict to the pipe."""

    def __init__(self, pipe: LogPipe) -> None:
        self._pipe = pipe

    def msg(self, event: Event) -> None:
        """Queue the event (every level ends here; the level is a key of the event)."""
        self._pipe.put(event)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StdlibHandler(logging.Handler):
    """Sends the standard library's log records through the same structlog chain."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log the record as an event of its logger's name."""
        logger = structlog.get_logger()
        kw: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            kw["exc_info"] = record.exc_info
        logger.log(record.levelno, record.getMessage(), **kw)


def _hand_off(_logger: Any, _method: str, event: Event) -> tuple[tuple[Event], dict[str, Any]]:
    """The chain's last step: the event dict itself goes to `QueueLogger`."""
    return (event,), {}


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """Log an exception that ended a thread (instead of writing it to stderr there)."""
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    structlog.get_logger().error("thread died", thread=name, exc_info=exc_info)


_pipe: LogPipe | None = None


def log_dropped() -> int:
    """Log events dropped since the start (0 before logging is configured)."""
    return 0 if _pipe is None else _pipe.dropped


def flush_logs(timeout: float = EXIT_DRAIN_S) -> bool:
    """Wait up to `timeout` s for queued log lines to be written; False if some were not."""
    return True if _pipe is None else _pipe.drain(timeout)


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> LogFormat:
    """Configure logging once for the whole process (again at a reload); return the format."""
    global _pipe
    chosen = resolve_format(fmt)
    sink = sink_for(chosen)
    if _pipe is None:
        _pipe = LogPipe(sink)
        atexit.register(flush_logs)
    else:
        _pipe.set_sink(sink)
    pipe = _pipe
    numeric = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _hand_off,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: QueueLogger(pipe),
        cache_logger_on_first_use=False,  # a reload may change the level
    )
    root = logging.getLogger()
    root.handlers = [_StdlibHandler()]
    root.setLevel(numeric)
    logging.captureWarnings(True)
    threading.excepthook = _thread_died
    return chosen
