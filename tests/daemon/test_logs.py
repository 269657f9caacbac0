"""Logging: a bounded queue to one logging thread whose sinks never block without bound."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.daemon.logs import (
    Event,
    JournalSink,
    LogPipe,
    StreamSink,
    json_line,
    resolve_format,
)
from gateway.daemon.logsink import (
    JournalSocket,
    NonBlockingStream,
    journal_datagram,
    journal_field_name,
    journal_fields,
)
from tests.support.threads import returns


def parse_journal(datagram: bytes) -> dict[str, str]:
    """Read one native-protocol datagram back into its fields (as journald does)."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


def unread_socket(path: Path) -> socket.socket:
    """A bound datagram socket that nobody reads (journald stuck behind a slow disk)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def read_all(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting on a socket, parsed."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(parse_journal(sock.recv(1 << 20)))
        except BlockingIOError:
            return out


def test_auto_format_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: journal under systemd, console on a terminal, JSON otherwise."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert resolve_format("auto", isatty=True) == "console"
    assert resolve_format("auto", isatty=False) == "json"
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert resolve_format("auto", isatty=True) == "journal"
    assert resolve_format("json", isatty=True) == "json"


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("variant", "VARIANT"),
        ("retry_in_s", "RETRY_IN_S"),
        ("_x", "X"),
        ("a-b.c", "A_B_C"),
        ("1st", "F_1ST"),
    ],
)
def test_journal_field_names_are_valid(key: str, field: str) -> None:
    """Log keys become journal field names of [A-Z0-9_], not starting with '_' or a digit."""
    assert journal_field_name(key) == field


def test_journal_fields_and_datagram_round_trip() -> None:
    """Each key is a field beside MESSAGE and PRIORITY; a value with newlines is sized."""
    event = {
        "event": "port lost",
        "level": "warning",
        "variant": "flu-1",
        "timestamp": "2026-12-06T20:00:00Z",
        "exception": "Traceback (most recent call last):\n  boom",
    }
    fields = journal_fields(event, "p1-gateway")
    assert (
        fields["MESSAGE"] == "port lost variant=flu-1\nTraceback (most recent call last):\n  boom"
    )
    assert fields["PRIORITY"] == "4"
    assert fields["VARIANT"] == "flu-1"
    assert fields["SYSLOG_IDENTIFIER"] == "p1-gateway"
    assert "TIMESTAMP" not in fields
    assert parse_journal(journal_datagram(fields)) == fields


def test_journal_sink_reaches_a_real_socket(tmp_path: Path) -> None:
    """The sink sends one datagram per event to the journal socket."""
    server = unread_socket(tmp_path / "socket")
    sink = JournalSink(socket_path=str(tmp_path / "socket"))
    assert sink.write({"event": "port opened", "level": "info", "variant": "v1"})
    [entry] = read_all(server)
    assert entry["MESSAGE"] == "port opened variant=v1"
    assert entry["PRIORITY"] == "6"
    server.close()


def test_a_stuck_journal_socket_costs_a_bounded_wait(tmp_path: Path) -> None:
    """Once journald's queue is full a send gives up after its timeout; later ones get through."""
    server = unread_socket(tmp_path / "socket")
    journal = JournalSocket(str(tmp_path / "socket"), timeout=0.2)
    sent = 0
    while journal.send(b"MESSAGE=x\n"):
        sent += 1
        assert sent < 10_000, "the queue never filled"
    start = time.monotonic()
    assert not journal.send(b"MESSAGE=y\n")
    assert 0.15 < time.monotonic() - start < 5.0
    assert len(read_all(server)) == sent
    assert journal.send(b"MESSAGE=z\n")
    server.close()


def test_a_missing_journal_is_a_dropped_line(tmp_path: Path) -> None:
    """No journald: the line is dropped at once, not waited for."""
    assert not JournalSocket(str(tmp_path / "none"), timeout=5.0).send(b"MESSAGE=x\n")


def test_a_full_queue_drops_counts_and_says_so_in_the_next_line(tmp_path: Path) -> None:
    """Never waiting: a stuck sink fills the queue; every loss is counted and reported once."""
    server = unread_socket(tmp_path / "socket")
    pipe = LogPipe(JournalSink(socket_path=str(tmp_path / "socket")), size=5)

    def put_all() -> None:
        for n in range(300):
            pipe.put({"event": "line", "level": "info", "n": n})

    assert returns(put_all)
    assert pipe.dropped > 0
    entries: list[dict[str, str]] = []
    deadline = time.monotonic() + 20
    while pipe.stuck or not pipe.drain(0.05):  # journald catches up
        entries += read_all(server)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pipe.put({"event": "after", "level": "info"})  # carries whatever is still unreported
    assert pipe.drain(5)
    entries += read_all(server)
    assert entries[-1]["EVENT"] == "after"
    reported = sum(int(e.get("LOG_DROPPED", 0)) for e in entries)
    assert reported == pipe.dropped
    assert len(entries) + pipe.dropped == 301
    server.close()


class BlockedSink:
    """A sink that takes nothing until released (a journald that never reads)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[Event] = []

    def write(self, event: Event) -> bool:
        """Wait until released, then take the event."""
        self.release.wait()
        self.written.append(event)
        return True

    def close(self) -> None:
        """Nothing to release."""


def test_put_never_waits_for_a_sink_that_never_takes_anything() -> None:
    """With the sink stuck for good, puts still return: all but the queue's few are dropped."""
    sink = BlockedSink()
    pipe = LogPipe(sink, size=5)

    def put_all() -> None:
        for n in range(300):
            pipe.put({"event": "line", "n": n})

    assert returns(put_all), "put waited for the sink"
    # One event in the sink's hands (taken before or after the queue filled), five queued.
    assert pipe.dropped in (294, 295)
    sink.release.set()
    assert pipe.drain(10)
    assert len(sink.written) + pipe.dropped == 300
    assert sum(e.get("log_dropped", 0) for e in sink.written) == pipe.dropped


def test_a_pipe_nobody_reads_costs_a_bounded_wait_and_stays_blocking() -> None:
    """A full pipe (stderr, nobody reading): the write gives up in time; stderr's mode is kept."""
    r, w = os.pipe()
    try:
        out = NonBlockingStream(w)
        while out.write(b"x" * 4096, timeout=0.05):
            pass
        start = time.monotonic()
        assert not out.write(b"line\n", timeout=0.2)
        assert 0.15 < time.monotonic() - start < 5.0
        assert os.get_blocking(w), "the shared descriptor was made non-blocking"
        os.read(r, 1 << 20)
        assert out.write(b"line\n", timeout=0.2)
    finally:
        os.close(r)
        os.close(w)


def test_a_stream_socket_nobody_reads_costs_a_bounded_wait() -> None:
    """journald's stream socket (JOURNAL_STREAM) not read: a line gives up; the socket stays."""
    ours, journald = socket.socketpair()
    try:
        sink = StreamSink(json_line, ours.fileno())
        while sink.write({"event": "x" * 2000}):
            pass
        start = time.monotonic()
        assert not sink.write({"event": "late"})
        assert time.monotonic() - start < 5.0
        assert ours.getblocking()
    finally:
        ours.close()
        journald.close()


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run a snippet in a fresh interpreter (logging is configured once per process)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_json_format_writes_one_json_object_per_line() -> None:
    """The JSON format writes parseable lines with the event and its keys, all before exit."""
    out = run_python(
        "from gateway.daemon.logs import configure_logging; import structlog;"
        "configure_logging('json', 'info');"
        "log = structlog.get_logger(); log.debug('hidden');"
        "[log.info('port opened', variant='v1', n=n) for n in range(200)]"
    )
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert len(lines) == 200
    assert lines[0]["event"] == "port opened"
    assert lines[0]["variant"] == "v1"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert [line["n"] for line in lines] == list(range(200))


def test_stdlib_logging_and_dying_threads_go_the_same_way() -> None:
    """The standard library's records and a thread's uncaught exception become JSON lines."""
    out = run_python(
        "import logging, threading; from gateway.daemon.logs import configure_logging;"
        "configure_logging('json', 'info');"
        "logging.getLogger('gateway.mux').warning('port %s lost', 'v1');"
        "t = threading.Thread(target=lambda: 1 / 0, name='p1gw-x'); t.start(); t.join()"
    )
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines[0]["event"] == "port v1 lost"
    assert lines[0]["logger"] == "gateway.mux"
    assert lines[0]["level"] == "warning"
    assert lines[1]["event"] == "thread died"
    assert lines[1]["thread"] == "p1gw-x"
    assert "ZeroDivisionError" in lines[1]["exception"]


def test_reconfiguring_switches_the_sink_and_leaks_nothing() -> None:
    """A reload's new format takes effect; the sinks it replaced are closed."""
    out = run_python(
        "import os, structlog; from gateway.daemon.logs import configure_logging, flush_logs;"
        "configure_logging('json', 'info'); log = structlog.get_logger();"
        "log.info('first'); flush_logs(5); fds = len(os.listdir('/proc/self/fd'));"
        "[(configure_logging('json', 'info'), log.info('again')) for _ in range(50)];"
        "configure_logging('console', 'warning'); log.info('hidden'); log.warning('last');"
        "flush_logs(5); print(len(os.listdir('/proc/self/fd')) - fds)"
    )
    lines = out.stderr.splitlines()
    assert json.loads(lines[0])["event"] == "first"
    assert len(lines) == 52  # a line is rendered as the sink it is written to says
    assert "last" in lines[-1] and not lines[-1].startswith("{")
    assert int(out.stdout) <= 1  # the console sink's own descriptor
