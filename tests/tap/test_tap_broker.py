"""`p1-gateway tap` as a process against a real mosquitto with the shipped ACL, a scripted rig.

The rig's side publishes what the gateway publishes (raw with its `seq` and `variant` user
properties, invalid as JSON), redeliveries included, so every case is exact and quick.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import corpus
from gateway.devkit.mosquitto import MosquittoBroker, free_port, wait_until
from tests.tap.helpers import PASSWORDS, RigPublisher, StreamReader, TapProcess, tap_args

FLUVIUS = corpus.entry("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT.txt").read()


def frame(n: int) -> bytes:
    """A distinct telegram-like frame for seq `n`."""
    return b"/TAP5\\2seq%05d\r\n\r\n1-0:1.8.1(%010.3f*kWh)\r\n!\r\n" % (n, n / 1000)


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A private mosquitto from config/mosquitto (persistence on, the ACL as shipped)."""
    b = MosquittoBroker(PASSWORDS, rigs=("rig-a",))
    try:
        yield b.start()
    finally:
        b.close()


@pytest.fixture
def taps(tmp_path: Path) -> Iterator[list[TapProcess]]:
    """Tap processes started by a test; killed at the end if still running."""
    made: list[TapProcess] = []
    yield made
    for tap in made:
        tap.kill()


def start_tap(
    taps: list[TapProcess], broker: MosquittoBroker, folder: Path, extra: list[str], name: str
) -> TapProcess:
    """A tap for acme on rig-a, subscribed."""
    tap = TapProcess(folder, tap_args(broker, folder) + extra, name)
    taps.append(tap)
    assert tap.said("subscribed"), tap.log()
    return tap


def test_nothing_is_written_twice_and_order_holds_across_a_broker_restart(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """Redeliveries after a broker restart come out once, in order; other holders' never."""
    port = free_port()
    tap = start_tap(taps, broker, tmp_path, ["--tcp", f"v1=127.0.0.1:{port}"], "tap")
    reader = StreamReader("127.0.0.1", port)
    assert tap.said("reader 127.0.0.1:"), tap.log()  # accepted: it gets every frame from now
    rig = RigPublisher(broker)
    for n in (1, 2, 3, 4, 5):
        rig.publish("v1", n, frame(n))
    rig.publish("v1", 3, frame(3))  # a resend: the gateway saw no PUBACK
    rig.publish("v1", 99, frame(99), holder="beta")  # another holder's slot
    assert wait_until(lambda: reader.data.count(b"/") >= 5, 10)
    rig.close()

    broker.terminate()  # SIGTERM: mosquitto saves the tap's persistent session
    assert tap.said("connection to the broker lost"), tap.log()
    broker.start()
    assert tap.said("session resumed"), tap.log()
    assert tap.said("subscribed", times=2), tap.log()
    rig = RigPublisher(broker)
    for n in (4, 5, 6, 7, 8):  # the gateway resends what it had no PUBACK for, then goes on
        rig.publish("v1", n, frame(n))
    rig.close()
    want = b"".join(frame(n) for n in range(1, 9))
    assert wait_until(lambda: len(reader.data) >= len(want), 10), reader.data
    time.sleep(0.3)  # anything written twice would have come by now
    assert reader.data == want
    assert tap.stop(signal.SIGINT) == 0
    assert "v1: 8 written (0 invalid), 3 duplicates, 0 late" in tap.log()
    reader.close()


def test_a_restarted_tap_gets_what_came_while_it_was_away(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """The tap's persistent session keeps its messages while it is stopped."""
    port = free_port()
    extra = ["--tcp", f"v1=127.0.0.1:{port}"]
    first = start_tap(taps, broker, tmp_path, extra, "first")
    assert "new session" in first.log()
    assert first.stop() == 0
    rig = RigPublisher(broker)
    for n in (1, 2, 3):
        rig.publish("v1", n, frame(n))
    second = TapProcess(tmp_path, tap_args(broker, tmp_path) + extra, "second")
    taps.append(second)
    reader = StreamReader("127.0.0.1", port)
    # The broker sends the queued messages as soon as the session resumes, perhaps before
    # the reader is accepted: whatever the reader gets is whole frames, in order.
    assert second.said("session resumed"), second.log()
    rig.publish("v1", 4, frame(4))
    rig.close()
    assert wait_until(lambda: reader.data.endswith(frame(4)), 10), second.log()
    assert reader.data in {b"".join(frame(n) for n in range(k, 5)) for k in range(1, 5)}
    assert second.stop() == 0
    assert "v1: 4 written" in second.log()
    reader.close()


def test_invalid_frames_go_out_with_their_exact_bytes_unless_valid_only(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """An invalid frame is re-injected byte for byte between the valid ones; not with
    --valid-only."""
    every_port, valid_port = free_port(), free_port()
    start_tap(taps, broker, tmp_path, ["--tcp", f"v1=127.0.0.1:{every_port}"], "every")
    start_tap(
        taps, broker, tmp_path, ["--tcp", f"v1=127.0.0.1:{valid_port}", "--valid-only"], "valid"
    )
    every = StreamReader("127.0.0.1", every_port)
    valid = StreamReader("127.0.0.1", valid_port)
    assert all(tap.said("reader 127.0.0.1:") for tap in taps)
    bad = FLUVIUS[:-8] + b"\xff\x00" + FLUVIUS[-6:]  # high and NUL bytes survive as they are
    rig = RigPublisher(broker)
    rig.publish("v1", 1, FLUVIUS)
    rig.publish("v1", 2, bad, kind="invalid")
    rig.publish("v1", 3, frame(3))
    rig.close()
    assert wait_until(lambda: every.data.endswith(frame(3)), 10)
    assert wait_until(lambda: valid.data.endswith(frame(3)), 10)
    assert every.data == FLUVIUS + bad + frame(3)
    assert valid.data == FLUVIUS + frame(3)
    for tap in taps:
        assert tap.stop() == 0
    every.close()
    valid.close()


def test_line_rate_takes_a_telegram_at_least_its_wire_time(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """With --line-rate 115200 the last byte comes no sooner than len/11520 s after the publish."""
    port = free_port()
    extra = ["--tcp", f"v1=127.0.0.1:{port}", "--line-rate", "115200"]
    tap = start_tap(taps, broker, tmp_path, extra, "paced")
    reader = StreamReader("127.0.0.1", port)
    assert tap.said("reader 127.0.0.1:")
    rig = RigPublisher(broker)
    sent = time.monotonic()
    rig.publish("v1", 1, FLUVIUS)
    assert wait_until(lambda: reader.data == FLUVIUS, 10)
    last = reader.arrivals[-1][0]
    wire = len(FLUVIUS) / 11520
    assert last - sent >= wire, (last - sent, wire)
    print(
        f"paced: {len(FLUVIUS)} bytes, wire {wire * 1e3:.1f} ms, publish to last byte "
        f"{(last - sent) * 1e3:.1f} ms, {len(reader.arrivals)} reads"
    )
    rig.close()
    assert taps[0].stop() == 0
    reader.close()


def test_refused_credentials_exit_non_zero_and_say_so(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """A wrong password ends the tap with exit 3 and a message naming the refusal."""
    args = tap_args(broker, tmp_path, password="wrong")
    tap = TapProcess(tmp_path, [*args, "--tcp", "v1=127.0.0.1:0"], "refused")
    taps.append(tap)
    assert tap.proc.wait(15) == 3
    assert "the broker refused the credentials of user acme" in tap.log(), tap.log()


def test_the_tap_speaks_tls_to_the_broker(taps: list[TapProcess], tmp_path: Path) -> None:
    """With --tls-ca-file the tap connects over TLS, checking the broker against that CA."""
    with MosquittoBroker(PASSWORDS, rigs=("rig-a",), tls=True) as broker:
        assert broker.tls_port is not None
        port = free_port()
        args = tap_args(broker, tmp_path)
        args[args.index("--port") + 1] = str(broker.tls_port)
        tap = TapProcess(
            tmp_path,
            [*args, "--tls-ca-file", str(broker.ca_file), "--tcp", f"v1=127.0.0.1:{port}"],
            "tls",
        )
        taps.append(tap)
        assert tap.said("subscribed"), tap.log()
        reader = StreamReader("127.0.0.1", port)
        assert tap.said("reader 127.0.0.1:")
        rig = RigPublisher(broker)
        rig.publish("v1", 1, FLUVIUS)
        rig.close()
        assert wait_until(lambda: reader.data == FLUVIUS, 10), tap.log()
        assert tap.stop() == 0
        reader.close()


def test_two_taps_with_one_client_id_are_told_so(
    broker: MosquittoBroker, taps: list[TapProcess], tmp_path: Path
) -> None:
    """Two taps on one session take it from each other: they say so, and go on."""
    same = ["--client-id", "acme-lab-1"]
    first = start_tap(taps, broker, tmp_path, [*same, "--tcp", "v1=127.0.0.1:0"], "first")
    second = start_tap(taps, broker, tmp_path, [*same, "--tcp", "v1=127.0.0.1:0"], "second")
    warned = "another tap or client uses client id acme-lab-1"
    assert wait_until(lambda: warned in first.log() + second.log(), 20), first.log()
    assert first.stop(signal.SIGINT) == 0
    assert second.stop() == 0


def test_a_tap_started_before_the_broker_connects_once_it_is_there(
    taps: list[TapProcess], tmp_path: Path
) -> None:
    """No broker yet: the tap says so and keeps trying; when the broker comes, it serves."""
    broker = MosquittoBroker(PASSWORDS, rigs=("rig-a",))
    try:
        port = free_port()
        tap = TapProcess(tmp_path, [*tap_args(broker, tmp_path), "--tcp", f"v1=127.0.0.1:{port}"])
        taps.append(tap)
        assert tap.said("cannot connect to the broker"), tap.log()
        broker.start()
        assert tap.said("subscribed"), tap.log()
        reader = StreamReader("127.0.0.1", port)
        assert tap.said("reader 127.0.0.1:")
        rig = RigPublisher(broker)
        rig.publish("v1", 1, frame(1))
        rig.close()
        assert wait_until(lambda: reader.data == frame(1), 10)
        assert tap.stop() == 0
        reader.close()
    finally:
        broker.close()
