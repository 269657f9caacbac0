"""The multiplexer on real pseudo-terminals, sockets and pyserial's loop:// handler."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest

from gateway import corpus
from gateway.errors import PortLostError, PortOpenError
from gateway.mux import (
    FrameReceived,
    HealthState,
    Multiplexer,
    OpenPort,
    PortClosed,
    PortConfig,
    PortLost,
    PortOpened,
    PortOpenFailed,
    PortSilent,
    PortUp,
    open_port,
)
from gateway.mux.serial_io import read_fd
from gateway.sim import EVEN_PARITY
from tests.mux.conftest import Recorder
from tests.support.pty import PtyPair, open_fd_count, wait_until

S = 1_000_000_000
MS = 1_000_000

V5 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5_TWO_MBUS").read()
V22 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V2_2").read()


def test_frames_arrive_with_the_time_their_last_byte_was_read(recorder: Recorder) -> None:
    """A telegram written in two parts is one frame, timed at the read of its last part."""
    with PtyPair() as pty, Multiplexer(recorder, [PortConfig("m1", pty.path, spec="V5")]):
        recorder.wait(lambda: recorder.of(PortOpened, "m1"), message="port opened")
        pty.write(V5[:300])
        time.sleep(0.2)
        before_mono, before_wall = time.monotonic_ns(), time.time_ns()
        pty.write(V5[300:])
        recorder.wait(lambda: recorder.frames("m1"), message="the frame")
        after_mono = time.monotonic_ns()
    (event,) = recorder.frames("m1")
    assert event.frame.raw == V5 and event.frame.crc_ok is True
    assert before_mono <= event.received_monotonic_ns <= after_mono
    assert abs(event.received_wall_ns - before_wall) < 5_000_000_000
    opened = recorder.of(PortOpened, "m1")[0]
    assert (opened.profile, opened.reconnect, opened.request_line_held) == (
        "115200 8N1",
        False,
        None,
    )


def test_a_dsmr22_port_strips_parity_and_an_8n1_port_does_not(recorder: Recorder) -> None:
    """Bytes with even parity in bit 7 frame on a V2_2 port; on an 'auto' port they are noise."""
    wire = V22.translate(EVEN_PARITY)
    with PtyPair() as old, PtyPair() as auto:
        ports = [PortConfig("old", old.path, spec="V2_2"), PortConfig("auto", auto.path)]
        with Multiplexer(recorder, ports) as mux:
            recorder.wait(lambda: len(recorder.of(PortOpened)) == 2, message="both open")
            old.write(wire)
            auto.write(wire)
            recorder.wait(lambda: recorder.frames("old"), message="the stripped frame")
            wait_until(lambda: mux.snapshot()["auto"].counters.noise_bytes == len(wire))
    (event,) = recorder.frames("old")
    assert event.frame.raw == V22 and event.frame.crc_ok is None
    assert recorder.frames("auto") == []


def test_a_consumer_that_raises_never_stops_the_reader(recorder: Recorder) -> None:
    """Every consumer exception is counted; reading goes on for every telegram."""
    calls: list[FrameReceived] = []

    def failing(event: object) -> None:
        recorder(event)  # type: ignore[arg-type]
        if isinstance(event, FrameReceived):
            calls.append(event)
            raise RuntimeError("consumer bug")

    with PtyPair() as pty, Multiplexer(failing, [PortConfig("m1", pty.path)]) as mux:
        recorder.wait(lambda: recorder.of(PortOpened), message="open")
        for _ in range(5):
            pty.write(V5)
        wait_until(lambda: len(calls) == 5, message="5 frames despite the exceptions")
        snap = mux.snapshot()["m1"]
        assert mux.progress().running
    assert snap.counters.consumer_errors == 5 and snap.counters.telegrams == 5


class PathChecks:
    """Records the reader's presence checks (`os.path.exists`) of paths under one folder, each
    with the loop iteration that made it: the checks themselves, counted, instead of time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
        self.mux: Multiplexer | None = None
        self.calls: list[tuple[int, str]] = []
        real, prefix = os.path.exists, str(folder)

        def exists(path: object) -> bool:
            """The real check, recorded when it is of a path under the folder."""
            if isinstance(path, str) and path.startswith(prefix):
                mux = self.mux
                self.calls.append((-1 if mux is None else mux.progress().iterations, path))
            return real(path)  # type: ignore[arg-type]

        monkeypatch.setattr(os.path, "exists", exists)

    def of(self, path: Path) -> int:
        """How many checks of `path` were made."""
        return sum(1 for _, p in list(self.calls) if p == str(path))

    def rounds(self) -> list[set[str]]:
        """The paths checked in each loop iteration that checked any, in order."""
        by_iteration: dict[int, set[str]] = {}
        for iteration, path in list(self.calls):
            by_iteration.setdefault(iteration, set()).add(path)
        return list(by_iteration.values())


def test_a_missing_device_is_down_and_is_opened_as_soon_as_it_appears(
    recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open fails while the path is missing (reported once); no open is tried while it stays
    missing (its presence is watched instead); the port opens when a device appears there."""
    link = tmp_path / "meter"
    checks = PathChecks(monkeypatch, tmp_path)
    with Multiplexer(recorder, [PortConfig("m1", str(link))]) as mux:
        recorder.wait(lambda: recorder.of(PortOpenFailed, "m1"), message="open failure")
        # 30 presence checks of 50 ms: past every reopen delay of the backoff (0.1 to 1 s).
        wait_until(lambda: checks.of(link) >= 30, message="30 presence checks")
        assert len(recorder.of(PortOpenFailed, "m1")) == 1
        failed = recorder.of(PortOpenFailed, "m1")[0]
        assert "No such file" in failed.error and failed.attempts == 1
        assert failed.retry_in_s == 0.05  # the presence check's interval, not the backoff
        snap = mux.snapshot()["m1"]
        assert snap.state is HealthState.DOWN and snap.counters.open_failures == 1
        with PtyPair() as pty:
            link.symlink_to(pty.path)
            recorder.wait(lambda: recorder.of(PortOpened, "m1"), message="opened")
            pty.write(V5)
            recorder.wait(lambda: recorder.frames("m1"), message="a frame")
            assert mux.snapshot()["m1"].state is HealthState.UP


def test_missing_ports_share_their_presence_checks(
    recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 missing devices are checked together, all in one wake-up of the reader, not each on
    a schedule of its own (which was one wake-up per port and check)."""
    ports = [PortConfig(f"m{i:02d}", str(tmp_path / f"tty{i}")) for i in range(32)]
    with Multiplexer(recorder, ports, presence_check_s=0.05) as mux:
        recorder.wait(lambda: len(recorder.of(PortOpenFailed)) == 32, message="32 open failures")
        checks = PathChecks(monkeypatch, tmp_path)
        checks.mux = mux
        wait_until(lambda: len(checks.rounds()) >= 6, message="6 rounds of presence checks")
        rounds = checks.rounds()
    # The first round recorded may have begun before the recording did.
    assert [len(paths) for paths in rounds[1:]] == [32] * (len(rounds) - 1)


def test_a_port_missing_for_long_is_checked_on_a_slower_grid(
    recorder: Recorder, tmp_path: Path
) -> None:
    """A path missing for less than 30 s is checked on the 50 ms grid (a meter being swapped);
    missing longer, on the 0.5 s grid (a rig left with a meter unplugged for days wakes the
    reader twice a second for it, not 20 times). The loop's clock is the test's."""
    now = [1_000 * S]  # on both grids

    def clock() -> int:
        """The loop's monotonic clock, moved by the test only."""
        return now[0]

    link = tmp_path / "meter"
    with Multiplexer(
        recorder,
        [PortConfig("m1", str(link))],
        presence_check_s=0.05,
        presence_slow_s=0.5,
        presence_slow_after_s=30.0,
        monotonic_ns=clock,
    ) as mux:
        recorder.wait(lambda: recorder.of(PortOpenFailed, "m1"), message="open failure")
        t0 = now[0]  # the test's clock: every time below is a point it set, none measured
        assert mux.next_presence_check("m1") == t0 + 50 * MS
        for missing_for, expected in ((29_990 * MS, 30_000 * MS), (30_010 * MS, 30_500 * MS)):
            before = mux.next_presence_check("m1")
            now[0] = t0 + missing_for
            wait_until(lambda b=before: mux.next_presence_check("m1") != b, message="a check")
            assert mux.next_presence_check("m1") == t0 + expected
        failed = recorder.of(PortOpenFailed, "m1")
        assert len(failed) == 1 and failed[0].retry_in_s == 0.05
        with PtyPair() as pty:  # plugged in: found at the next slow check, opened
            link.symlink_to(pty.path)
            now[0] = t0 + 30_500 * MS
            recorder.wait(lambda: recorder.of(PortOpened, "m1"), message="opened")
        recorder.wait(lambda: recorder.of(PortLost, "m1"), message="unplugged again")
        # Missing anew: back on the fast grid, counted from now.
        assert mux.next_presence_check("m1") == t0 + 30_550 * MS


def test_a_device_that_is_there_but_does_not_open_is_retried_with_backoff(
    recorder: Recorder, tmp_path: Path
) -> None:
    """A path that exists but fails with a 'no such device' errno (ENXIO: nothing behind the
    node) is not missing: it is retried on the growing reopen delay, which each failure
    announces, not at the presence checks of a missing path (every 0.05 s here)."""
    node = tmp_path / "ttyS9"
    node.touch()
    attempts: list[str] = []

    def no_device(config: PortConfig) -> OpenPort:
        """An opener for a node with no device behind it; each failure says which it is, so
        that each is reported."""
        attempts.append(config.url)
        try:
            raise OSError(errno.ENXIO, f"No such device or address ({len(attempts)})", config.url)
        except OSError as exc:
            raise PortOpenError(str(exc), variant=config.variant, port=config.url) from exc

    with Multiplexer(
        recorder, [PortConfig("m1", str(node))], presence_check_s=0.05, opener=no_device
    ):
        recorder.wait(lambda: len(recorder.of(PortOpenFailed, "m1")) >= 3, message="3 failures")
    failures = recorder.of(PortOpenFailed, "m1")[:3]
    assert [f.attempts for f in failures] == [1, 2, 3]
    assert [f.retry_in_s for f in failures] == [0.1, 0.2, 0.4]


def test_a_port_is_opened_exclusively(recorder: Recorder) -> None:
    """Two variants on one device: the second cannot open it ('in use')."""
    with PtyPair() as pty:
        first = Multiplexer(recorder, [PortConfig("a", pty.path)])
        with first:
            recorder.wait(lambda: recorder.of(PortOpened, "a"), message="first open")
            second = Recorder()
            with Multiplexer(second, [PortConfig("b", pty.path)]):
                second.wait(lambda: second.of(PortOpenFailed, "b"), message="refused")
            assert "in use" in second.of(PortOpenFailed, "b")[0].error


def test_request_line_is_held_high_and_handlers_without_fd_are_polled(recorder: Recorder) -> None:
    """loop:// has no descriptor: it is polled; its RTS line is set high after opening.

    A pty has no modem lines (TIOCMBIS answers ENOTTY), so there the port still opens and
    reports request_line_held=False; loop:// stores the line state, which is checked here.
    """
    opened: list[OpenPort] = []

    def capturing_opener(config: PortConfig) -> OpenPort:
        port = open_port(config)
        opened.append(port)
        return port

    with PtyPair() as pty:
        ports = [
            PortConfig("loop", "loop://", request_line="rts"),
            PortConfig("pty", pty.path, request_line="dtr"),
        ]
        with Multiplexer(recorder, ports, opener=capturing_opener):
            recorder.wait(lambda: len(recorder.of(PortOpened)) == 2, message="both open")
            loop = next(p for p in opened if p.fd is None)
            assert loop.serial.rts is True
            loop.serial.write(V5)  # loop:// echoes what is written: the poll reads it
            recorder.wait(lambda: recorder.frames("loop"), message="a frame via polling")
    by_variant = {e.variant: e for e in recorder.of(PortOpened)}
    assert by_variant["loop"].request_line_held is True
    assert by_variant["pty"].request_line_held is False
    assert recorder.frames("loop")[0].frame.crc_ok is True


def test_socket_urls_are_read_and_reconnected(recorder: Recorder) -> None:
    """socket:// to a local TCP server: frames arrive; a closed connection is lost and
    reopened."""
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()
    connections: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        """Accept two connections in turn; stream a telegram every 50 ms on each."""
        for _ in range(2):
            conn, _ = server.accept()
            connections.append(conn)
            try:
                while not done.is_set():
                    conn.sendall(V5)
                    time.sleep(0.05)
            except OSError:
                continue  # the test closed this connection: take the next one

    threading.Thread(target=serve, daemon=True).start()
    try:
        with Multiplexer(recorder, [PortConfig("net", f"socket://{host}:{port}")]) as mux:
            recorder.wait(lambda: recorder.frames("net"), message="first frame over TCP")
            connections[0].shutdown(socket.SHUT_RDWR)
            recorder.wait(lambda: recorder.of(PortLost, "net"), message="lost")
            lost_at = recorder.of(PortLost, "net")[0].at_monotonic_ns
            recorder.wait(
                lambda: recorder.frames("net")[-1].received_monotonic_ns > lost_at,
                message="frames after reconnecting",
            )
            assert mux.snapshot()["net"].counters.reconnects == 1
    finally:
        done.set()
        server.close()
        for conn in connections:
            conn.close()
    assert recorder.of(PortOpened, "net")[-1].reconnect is True
    assert all(e.frame.crc_ok for e in recorder.frames("net"))


def test_silence_is_reported_and_telegrams_bring_the_port_up_again(recorder: Recorder) -> None:
    """With a 0.2 s interval: silent after 0.6 s without telegrams, up on the next one."""
    with PtyPair() as pty, Multiplexer(recorder, [PortConfig("m1", pty.path, interval_s=0.2)]):
        recorder.wait(lambda: recorder.of(PortOpened), message="open")
        pty.write(V5)
        recorder.wait(lambda: recorder.of(PortSilent, "m1"), message="silent")
        silent = recorder.of(PortSilent, "m1")[0]
        assert silent.silent_for_s >= 0.6 and silent.expected_interval_s == 0.2
        pty.write(V5)
        recorder.wait(lambda: recorder.of(PortUp, "m1"), message="up again")
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds.index("PortSilent") < kinds.index("PortUp")


def test_a_lost_pty_is_reported_with_its_partial_frame(recorder: Recorder) -> None:
    """Closing the master mid-telegram: the partial frame is dropped as truncated, port lost."""
    with Multiplexer(recorder) as mux:
        pty = PtyPair()
        mux.apply([PortConfig("m1", pty.path)])
        recorder.wait(lambda: recorder.of(PortOpened), message="open")
        pty.write(V5[:200])
        wait_until(lambda: mux.framer_pending("m1") == 200, message="200 bytes pending")
        pty.close_master()
        recorder.wait(lambda: recorder.of(PortLost, "m1"), message="lost")
        snap = mux.snapshot()["m1"]
    assert snap.state is HealthState.DOWN and snap.counters.truncated == 1
    assert "end of file" in recorder.of(PortLost)[0].error


def test_stop_closes_every_port_and_descriptor(recorder: Recorder) -> None:
    """After stop() the thread has ended, each open port got PortClosed, no fd is left."""
    with PtyPair() as a, PtyPair() as b:
        baseline = open_fd_count()
        mux = Multiplexer(recorder, [PortConfig("a", a.path), PortConfig("b", b.path)])
        mux.start()
        recorder.wait(lambda: len(recorder.of(PortOpened)) == 2, message="both open")
        assert open_fd_count() > baseline
        mux.stop()
        assert not mux.progress().running
        assert {e.reason for e in recorder.of(PortClosed)} == {"stopped"}
        assert len(recorder.of(PortClosed)) == 2
        wait_until(lambda: open_fd_count() == baseline, message="descriptors closed")


def test_the_loop_makes_progress_while_idle(recorder: Recorder) -> None:
    """The watchdog's indicator moves even with no port and no traffic."""
    with Multiplexer(recorder, tick_s=0.05) as mux:
        wait_until(lambda: mux.progress().iterations > 0, message="first iteration")
        first = mux.progress()
        wait_until(lambda: mux.progress().iterations >= first.iterations + 5, message="5 more")
        later = mux.progress()
    assert later.last_iteration_monotonic_ns > first.last_iteration_monotonic_ns
    assert later.cpu_s is not None


def test_apply_refuses_a_variant_twice() -> None:
    """Two ports with one variant id cannot be applied."""
    mux = Multiplexer(lambda e: None)
    with pytest.raises(ValueError):
        mux.apply([PortConfig("a", "/dev/null"), PortConfig("a", "/dev/zero")])


def test_pyserial_and_os_errors_become_gateway_port_errors() -> None:
    """Opening a missing device or an unknown URL raises PortOpenError; reading a pty whose
    master closed raises PortLostError."""
    with pytest.raises(PortOpenError) as missing:
        open_port(PortConfig("x", "/nonexistent/tty"))
    assert missing.value.variant == "x" and missing.value.port == "/nonexistent/tty"
    cause = missing.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOENT
    with pytest.raises(PortOpenError) as scheme:
        open_port(PortConfig("x", "nosuch://host"))
    assert not isinstance(scheme.value.__cause__, OSError)
    pty = PtyPair()
    port = open_port(PortConfig("x", pty.path))
    try:
        assert port.fd is not None
        pty.write(b"/abc")
        assert select.select([port.fd], [], [], 5)[0]
        assert read_fd(port.fd, 4096, "x", pty.path) == b"/abc"
        pty.close_master()
        assert select.select([port.fd], [], [], 5)[0]  # a hang-up is readiness too
        with pytest.raises(PortLostError):
            read_fd(port.fd, 4096, "x", pty.path)
    finally:
        port.close()
