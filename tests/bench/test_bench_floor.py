"""The floor of `bench e2e --baseline floor`: its framing, CRC, MQTT bytes and one pty.

The floor is a measuring instrument: what it must get right is that it does the work it claims
(every telegram framed, CRC-checked, published and received) and no less, so that its CPU is
a fair lower bound. No speed is asserted. Its runs beside the gateway are in
`test_bench_e2e.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import tty
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import corpus
from gateway.bench.baseline import BaselinePort
from gateway.bench.floor import (
    Floor,
    FloorPort,
    connect_packet,
    crc_holds,
    frames_in,
    publish_packet,
    remaining_length,
)

CRC_FRAMES = [e.read() for e in corpus.with_crc(corpus.CrcStatus.VALID)]


@pytest.fixture
def wired() -> Iterator[tuple[int, Floor, socket.socket, select.epoll]]:
    """A floor on one real pty (raw), its broker end a socket pair: (master, floor, peer, epoll)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    ours, peer = socket.socketpair()
    port = FloorPort(BaselinePort("e1", os.ttyname(slave), "V5"), slave, b"t/e1", '"e1"', "V5")
    epoll = select.epoll()
    epoll.register(slave, select.EPOLLIN)
    yield master, Floor([port], ours, decode=True), peer, epoll
    epoll.close()
    for fd in (master, slave):
        with contextlib.suppress(OSError):  # the test may have closed the master
            os.close(fd)
    ours.close()
    peer.close()


def _whole_frames(data: bytes, with_crc: bool = True) -> list[bytes]:
    """The frames `frames_in` takes out of `data` handed over at once."""
    return frames_in(bytearray(data), with_crc)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length_is_the_specs_variable_byte_integer(n: int, encoded: str) -> None:
    """The boundary values of MQTT 3.1.1's table 2.4 encode as the spec gives them."""
    assert remaining_length(n).hex() == encoded


def test_publish_packet_is_qos1_with_topic_id_and_payload() -> None:
    """Fixed header 0x32, remaining length, topic, packet id, then the payload as given."""
    packet = publish_packet(b"p1/r/slot/h/v/telegram", 513, b"x" * 200)
    assert packet[0] == 0x32
    assert packet[1:3] == remaining_length(2 + 22 + 2 + 200)
    assert packet[3:5] == (22).to_bytes(2, "big") and packet[5:27] == b"p1/r/slot/h/v/telegram"
    assert packet[27:29] == b"\x02\x01" and packet[29:] == b"x" * 200


def test_connect_packet_asks_for_a_clean_311_session_without_keepalive() -> None:
    """CONNECT: protocol MQTT level 4, user name + password + clean session, keep-alive 0."""
    packet = connect_packet("id", "user", "pw")
    body = packet[2:]
    assert packet[0] == 0x10 and packet[1] == len(body)
    assert body[:10] == b"\x00\x04MQTT\x04\xc2\x00\x00"
    assert body[10:] == b"\x00\x02id\x00\x04user\x00\x02pw"


@pytest.mark.parametrize("raw", CRC_FRAMES, ids=range(len(CRC_FRAMES)))
def test_every_corpus_frame_with_a_valid_crc_is_found_and_holds(raw: bytes) -> None:
    """The corpus frames whose CRC holds: one frame each, and its CRC holds."""
    frames = _whole_frames(raw)
    assert len(frames) == 1 and crc_holds(frames[0])
    assert frames[0].startswith(b"/") and frames[0].endswith(b"\n")


def test_a_corrupted_byte_fails_the_crc() -> None:
    """One byte changed inside the frame: the CRC no longer holds."""
    frame = _whole_frames(CRC_FRAMES[0])[0]
    spoiled = frame[:20] + bytes([frame[20] ^ 0x01]) + frame[21:]
    assert crc_holds(frame) and not crc_holds(spoiled)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(CRC_FRAMES), min_size=1, max_size=4),
    st.binary(max_size=20).filter(lambda b: b"/" not in b),
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40),
)
def test_frames_are_the_same_whatever_the_reads(
    raws: list[bytes], noise: bytes, cuts: list[int]
) -> None:
    """A stream cut into any reads yields the frames the whole stream yields, noise dropped."""
    stream = noise + b"".join(raws)
    expected = _whole_frames(stream)
    assert len(expected) == len(raws)
    buffer, got, at = bytearray(), [], 0
    for size in cuts * (len(stream) // sum(cuts) + 1):
        if at >= len(stream):
            break
        buffer += stream[at : at + size]
        at += size
        got += frames_in(buffer, True)
    assert got == expected


def test_a_truncated_crc_line_is_no_frame() -> None:
    """`!` and a line end with fewer than four CRC digits: dropped, the next frame found."""
    frame = _whole_frames(CRC_FRAMES[0])[0]
    cut = frame[: frame.rindex(b"!") + 2] + b"\r\n"
    assert _whole_frames(cut + frame) == [frame]
    assert _whole_frames(cut, with_crc=False) == [cut]


def test_a_frame_cut_short_by_a_new_one_is_dropped() -> None:
    """A frame's head with no `!`, then a whole frame: only the whole frame comes out."""
    frame = _whole_frames(CRC_FRAMES[0])[0]
    assert _whole_frames(frame[:150] + frame) == [frame]


def test_a_frame_from_the_pty_goes_out_as_one_publish_with_its_values(
    wired: tuple[int, Floor, socket.socket, select.epoll],
) -> None:
    """Bytes written to the pty: one PUBLISH on the socket, raw and decoded values inside."""
    master, floor, peer, epoll = wired
    raw = _whole_frames(CRC_FRAMES[0])[0]
    os.write(master, raw)
    floor.read_ready(floor.ports[next(iter(floor.ports))], epoll)
    packet = peer.recv(65536)
    assert packet[0] == 0x32 and packet.index(b"\x00\x04t/e1\x00\x01{") > 0  # QoS 1, id 1
    payload = json.loads(packet[packet.index(b"{") :])
    assert payload["variant"] == "e1" and payload["raw"] == raw.decode("latin-1")
    assert payload["objects"] and floor.counters.telegrams == floor.counters.published == 1


def test_a_port_whose_other_end_is_gone_is_no_longer_watched(
    wired: tuple[int, Floor, socket.socket, select.epoll],
) -> None:
    """The pty's master closed (an unplug): counted once, unregistered, no busy loop."""
    master, floor, _peer, epoll = wired
    os.close(master)
    floor.read_ready(
        floor.ports[next(iter(floor.ports))], epoll
    )  # as when epoll reports the hang-up
    assert floor.counters.reader_errors == 1
    assert epoll.poll(0) == []
