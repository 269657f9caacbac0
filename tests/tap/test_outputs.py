"""The tap's outputs on real sockets and real pseudo-terminals, driven by a real selector."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.errors import TapError
from gateway.tap.outputs import PtyPort, TcpFanout
from tests.support.threads import returns


@pytest.fixture
def selector() -> Iterator[selectors.BaseSelector]:
    """A selector like the tap's IO thread's."""
    sel = selectors.DefaultSelector()
    yield sel
    sel.close()


def pump(sel: selectors.BaseSelector, until: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run the selector's handlers until `until()` holds (or `timeout` s pass)."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        for key, mask in sel.select(0.01):
            key.data(mask)
    return True


def recv_all(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    """Read until `size` bytes came (or the timeout)."""
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def connect(sel: selectors.BaseSelector, fanout: TcpFanout, count: int) -> socket.socket:
    """A client of `fanout`, once the listener has accepted it."""
    sock = socket.create_connection((fanout.host, fanout.port))
    assert pump(sel, lambda: len(fanout.clients) >= count)
    return sock


def test_every_client_gets_every_frame_byte_for_byte(selector: selectors.BaseSelector) -> None:
    """Two clients of one listener each get the same bytes; what they send is ignored."""
    fanout = TcpFanout("v1", "127.0.0.1", 0, selector)
    try:
        a = connect(selector, fanout, 1)
        b = connect(selector, fanout, 2)
        a.sendall(b"ignored input")
        frames = [b"/A1!\r\n", bytes(range(256)), b"/A3!\r\n"]
        for frame in frames:
            assert fanout.write(frame)
        want = b"".join(frames)
        assert recv_all(a, len(want)) == want
        assert recv_all(b, len(want)) == want
        assert pump(selector, lambda: fanout.ignored_bytes == len(b"ignored input"))
        a.close()
        assert pump(selector, lambda: len(fanout.clients) == 1)
        assert fanout.write(b"/after!\r\n")
        assert recv_all(b, 9) == b"/after!\r\n"
        assert fanout.stats()["closed"] == 1 and fanout.stats()["accepted"] == 2
        b.close()
    finally:
        fanout.close()


def test_a_client_that_does_not_read_holds_up_nobody(selector: selectors.BaseSelector) -> None:
    """A stuck client's buffer fills and drops whole frames; the reading client gets them all."""
    fanout = TcpFanout("v1", "127.0.0.1", 0, selector, limit=64 * 1024)
    try:
        stuck = connect(selector, fanout, 1)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader = connect(selector, fanout, 2)
        frame = b"/" + b"x" * 1021 + b"\r\n"
        count = 4000  # 4 MB: far more than the stuck client's socket and buffer hold
        got = bytearray()
        reader.setblocking(False)

        def write_all() -> None:
            nonlocal got
            for _ in range(count):
                fanout.write(frame)
                for key, mask in selector.select(0):
                    key.data(mask)
                try:
                    while True:
                        got += reader.recv(1 << 20)
                except BlockingIOError:
                    pass

        assert returns(write_all)  # never blocked on the stuck client (a blocking send hangs)

        def drained() -> bool:
            try:
                while chunk := reader.recv(1 << 20):
                    got.extend(chunk)
            except BlockingIOError:
                pass
            return len(got) >= count * len(frame)

        assert pump(selector, drained)
        assert bytes(got) == frame * count
        assert fanout.stats()["dropped"] > 0
        stuck.close()
        reader.close()
    finally:
        fanout.close()


def test_a_client_joins_at_the_next_frame_start(selector: selectors.BaseSelector) -> None:
    """A client that connects in the middle of a paced frame gets whole frames only."""
    fanout = TcpFanout("v1", "127.0.0.1", 0, selector)
    try:
        early = connect(selector, fanout, 1)
        fanout.write(b"/one", first=True, total=8)
        late = connect(selector, fanout, 2)
        fanout.write(b"!\r\n.", first=False)
        fanout.write(b"/two!\r\n", first=True)
        assert recv_all(early, 15) == b"/one!\r\n./two!\r\n"
        assert recv_all(late, 7) == b"/two!\r\n"
        early.close()
        late.close()
    finally:
        fanout.close()


def ipv6_loopback() -> bool:
    """Can this machine listen on ::1?"""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_a_listener_on_an_ipv6_address(selector: selectors.BaseSelector) -> None:
    """`--tcp V=[::1]:PORT` listens on IPv6."""
    fanout = TcpFanout("v1", "::1", 0, selector)
    try:
        client = socket.create_connection(("::1", fanout.port))
        assert pump(selector, lambda: len(fanout.clients) == 1)
        fanout.write(b"/six!\r\n")
        assert recv_all(client, 7) == b"/six!\r\n"
        client.close()
    finally:
        fanout.close()


def test_a_port_in_use_is_a_tap_error(selector: selectors.BaseSelector) -> None:
    """Listening where another listens fails with TapError naming the address."""
    fanout = TcpFanout("v1", "127.0.0.1", 0, selector)
    try:
        with pytest.raises(TapError, match=f"127.0.0.1:{fanout.port}"):
            TcpFanout("v2", "127.0.0.1", fanout.port, selector)
    finally:
        fanout.close()


def open_reader(path: Path) -> int:
    """Open the pty as a serial reader would (raw, non-blocking)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    return fd


def read_all(fd: int, size: int, timeout: float = 5.0) -> bytes:
    """Read `size` bytes from a non-blocking fd (or what came before the timeout)."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            data += os.read(fd, size - len(data))
    return data


def test_the_pty_is_raw_behind_its_symlink_and_removed_on_close(
    selector: selectors.BaseSelector, tmp_path: Path
) -> None:
    """The symlink points at a pty in raw mode; closing removes it and unplugs the reader."""
    link = tmp_path / "p1-v1"
    port = PtyPort("v1", link, selector)
    try:
        assert link.is_symlink() and os.readlink(link) == port.device
        fd = open_reader(link)
        lflag = termios.tcgetattr(fd)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
        frame = b"/X\r\n1-0:1.8.1(1*kWh)\r\n\x03\x7f\xff!1234\r\n"
        assert port.write(frame)
        assert read_all(fd, len(frame)) == frame
    finally:
        port.close()
    assert not link.exists()
    assert select.select([fd], [], [], 1.0)[0]  # the master is gone: an unplugged serial port
    try:
        assert os.read(fd, 10) == b""  # end of file...
    except OSError as exc:
        assert exc.errno == errno.EIO  # ...or EIO, as a serial adapter pulled out gives
    os.close(fd)


def test_without_a_reader_frames_are_dropped_and_a_new_reader_starts_afresh(
    selector: selectors.BaseSelector, tmp_path: Path
) -> None:
    """Nobody reads: nothing blocks, frames are counted; what a reader left unread is gone."""
    port = PtyPort("v1", tmp_path / "p1-v1", selector)
    try:
        for _ in range(1000):
            assert port.write(b"/" + b"n" * 1000 + b"\r\n")
        assert port.stats()["no_reader"] == 1000
        first = open_reader(port.link)
        assert port.write(b"/unread!\r\n")
        os.close(first)
        port.write(b"/while away!\r\n")  # seen with nobody there: the unread frame is flushed
        second = open_reader(port.link)
        assert port.write(b"/fresh!\r\n")
        assert read_all(second, 9) == b"/fresh!\r\n"
        assert read_all(second, 1, timeout=0.2) == b""
        assert port.stats()["readers"] == 2 and port.stats()["no_reader"] == 1001
        os.close(second)
    finally:
        port.close()


def test_a_reader_that_does_not_read_never_blocks_the_tap(
    selector: selectors.BaseSelector, tmp_path: Path
) -> None:
    """The pty fills up, the port's buffer holds whole frames, the rest are dropped, counted."""
    port = PtyPort("v1", tmp_path / "p1-v1", selector, limit=16 * 1024)
    try:
        reader = open_reader(port.link)
        frame = b"/" + b"s" * 997 + b"\r\n"

        def write_all() -> None:
            for _ in range(500):
                port.write(frame)

        assert returns(write_all)  # a blocking write to a pty nobody reads would hang
        assert port.stats()["dropped"] > 0
        data = b""

        def drained() -> bool:
            nonlocal data
            with contextlib.suppress(BlockingIOError):
                data += os.read(reader, 1 << 16)
            return port.buffer.pending == 0 and len(data) % len(frame) == 0 and len(data) > 0

        assert pump(selector, drained)
        assert data == frame * (len(data) // len(frame))  # whole frames, none torn
        os.close(reader)
    finally:
        port.close()


def test_a_pty_path_that_is_a_file_is_refused(
    selector: selectors.BaseSelector, tmp_path: Path
) -> None:
    """The tap replaces a stale symlink, never a file."""
    path = tmp_path / "p1-v1"
    path.write_text("mine")
    with pytest.raises(TapError, match="not a symlink"):
        PtyPort("v1", path, selector)
    assert path.read_text() == "mine"
    stale = tmp_path / "stale"
    stale.symlink_to("/dev/pts/nonexistent")
    port = PtyPort("v1", stale, selector)
    assert os.readlink(stale) == port.device
    port.close()
