"""The systemd notifier: non-blocking sends, coalesced STATUS, no late watchdog pings."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from gateway.daemon.notify import MAX_PENDING, Notifier, NotifyOutbox, notify_address
from tests.support.threads import returns


def drain(outbox: NotifyOutbox) -> list[str]:
    """Everything the outbox would send, as if each send went out."""
    sent = []
    while (datagram := outbox.next()) is not None:
        sent.append(datagram.decode())
        outbox.sent()
    return sent


def test_status_is_sent_only_when_it_changes() -> None:
    """The same STATUS twice is told once; a new one is told again."""
    outbox = NotifyOutbox()
    outbox.status("2/2 ports up")
    assert drain(outbox) == ["STATUS=2/2 ports up"]
    outbox.status("2/2 ports up")
    assert drain(outbox) == []
    outbox.status("1/2 ports up")
    assert drain(outbox) == ["STATUS=1/2 ports up"]


def test_a_newer_status_replaces_one_not_yet_sent() -> None:
    """While systemd does not read, only the latest STATUS is kept."""
    outbox = NotifyOutbox()
    for n in range(50):
        outbox.status(f"{n} unacked")
    assert drain(outbox) == ["STATUS=49 unacked"]


def test_blocked_keeps_states_and_status_but_not_the_watchdog() -> None:
    """A full queue keeps READY and the latest STATUS for later; the watchdog ping is dropped."""
    outbox = NotifyOutbox()
    outbox.state("READY=1", "started")
    outbox.watchdog()
    outbox.blocked()
    outbox.status("3/3 ports up")
    outbox.watchdog()
    outbox.blocked()  # the watchdog ping could not go out either: not sent later
    assert drain(outbox) == ["READY=1\nSTATUS=started", "STATUS=3/3 ports up"]


def test_states_keep_their_order_and_a_state_carries_its_status() -> None:
    """RELOADING then READY go out in order; a STATUS equal to a state's is not repeated."""
    outbox = NotifyOutbox()
    outbox.state("RELOADING=1", "reloading configuration")
    outbox.state("READY=1", "2/2 ports up")
    outbox.status("2/2 ports up")
    outbox.watchdog()
    assert drain(outbox) == [
        "RELOADING=1\nSTATUS=reloading configuration",
        "READY=1\nSTATUS=2/2 ports up",
        "WATCHDOG=1",
    ]


def test_pending_state_changes_are_bounded() -> None:
    """Never read, state changes beyond MAX_PENDING drop the oldest, counted."""
    outbox = NotifyOutbox()
    for n in range(MAX_PENDING + 5):
        outbox.state(f"READY=1\nX={n}")
    assert outbox.dropped == 5
    sent = drain(outbox)
    assert len(sent) == MAX_PENDING
    assert sent[0] == "READY=1\nX=5"


def test_notify_addresses() -> None:
    """A path is a path, '@name' is an abstract socket, anything else is not spoken."""
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify") == b"\0sd-notify"
    assert notify_address("vsock:2:1234") is None
    assert notify_address("") is None


def test_outside_systemd_the_notifier_does_nothing() -> None:
    """Without NOTIFY_SOCKET every call is a no-op."""
    notifier = Notifier({})
    notifier.ready("x")
    notifier.watchdog()
    assert not notifier.enabled
    assert notifier.sent == 0


def bound(path: Path) -> socket.socket:
    """systemd's end of the notify socket, bound and never read."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on a socket."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except BlockingIOError:
            return out


def test_a_notify_socket_nobody_reads_blocks_nothing(tmp_path: Path) -> None:
    """A full receive queue: calls return at once; the latest STATUS goes out once it drains."""
    server = bound(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval == 1.0
    notifier.ready("started")

    def tell_all() -> None:
        for n in range(200):  # far beyond any receive queue (net.unix.max_dgram_qlen)
            notifier.status(f"{n} unacked")
            notifier.watchdog()

    assert returns(tell_all)  # a blocking send would hang here for good
    assert notifier.blocked > 0
    first = received(server)
    assert first[0] == "READY=1\nSTATUS=started"
    notifier.flush()  # room again: what was kept goes out, the stale watchdog pings do not
    later = received(server)
    assert later == ["STATUS=199 unacked"]
    notifier.status("199 unacked")
    assert received(server) == []
    notifier.close()
    server.close()


def test_a_notify_socket_that_is_gone_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """No listener: the error is remembered and nothing is retried forever."""
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    notifier.ready("started")
    notifier.status("x")
    assert notifier.last_error is not None
    assert notifier.sent == 0
    assert not notifier.outbox.waiting


def test_abstract_notify_socket(tmp_path: Path) -> None:
    """'@name' reaches an abstract socket of that name."""
    name = f"p1gw-test-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    notifier.stopping()
    assert received(server) == ["STOPPING=1\nSTATUS=stopping"]
    server.close()
