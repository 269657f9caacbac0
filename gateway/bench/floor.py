"""The floor of `p1-gateway bench e2e --baseline floor`: the least a Python P1-to-MQTT bridge does.

    python -m gateway.bench.floor --variants FILE --host H --port P --username U \\
        --password-file F --topic-prefix p1/rig-b/slot/bench

Not a gateway: a lower bound on what a CPython program pays per telegram on this machine for
the part of the work no design can leave out. One thread, one `epoll` over every port and
stdin; each ready port read once (`os.read`, nonblocking, raw mode); the frame found with
`bytes.find` (`/` to `!` and, where the version has one, the CRC line); the CRC checked with
crcmod's C function; one MQTT 3.1.1 PUBLISH, QoS 1, built by hand and written with one `send`,
to `PREFIX/VARIANT/telegram` as `{"variant": ..., "raw": TELEGRAM TEXT}` (what the bench's
subscriber matches telegrams by). PUBACKs are drained without waiting, before each publish;
the connection has no keep-alive, so nothing runs between telegrams. With `--decode` the
gateway's own `decode_telegram` and `telegram_body` add the decoded values to that message;
without it nothing is decoded. Nothing is spooled, logged, retried or reported.

Left out, all of which the gateway does: the raw message beside the decoded one, the spool,
health, the status file, the watchdog, reconnects, config reloads, tracking acknowledgements,
and (without `--decode`) decoding. The floor wakes for every piece a port hands over; fed whole
telegrams (one read each, the fewest wake-ups any reader can have) its CPU is the lower bound:
a Python gateway doing the contract's work does not go below `--decode`'s figure there.

Commands on stdin as for `gateway.bench.baseline`: `stats` (one JSON line of counters), `quit`.
It prints `ready` once connected with every port open.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import termios
import tty
from dataclasses import dataclass, field
from pathlib import Path

from gateway.bench.baseline import SEVEN_BITS, BaselinePort, bridge_parser, load_ports
from gateway.p1 import decode_telegram
from gateway.p1.crc import crc16
from gateway.publish.payload import telegram_body

#: How much one read takes at most (a tty's line discipline buffers 4 KiB).
READ_SIZE = 4096


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes, 7 bits each, low first)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(text: str | bytes) -> bytes:
    """An MQTT UTF-8 string: two bytes of length, then the bytes."""
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """MQTT 3.1.1 CONNECT: clean session, user name and password, no keep-alive."""
    variable = mqtt_string("MQTT") + bytes([4, 0x80 | 0x40 | 0x02]) + (0).to_bytes(2, "big")
    payload = mqtt_string(client_id) + mqtt_string(username) + mqtt_string(password)
    body = variable + payload
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """MQTT 3.1.1 PUBLISH, QoS 1: topic, packet identifier, payload."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join(
        (
            b"\x32",
            remaining_length(body_len),
            len(topic).to_bytes(2, "big"),
            topic,
            packet_id.to_bytes(2, "big"),
            payload,
        )
    )


def frames_in(buffer: bytearray, with_crc: bool) -> list[bytes]:
    """Take every whole frame out of `buffer`: from the last `/` before a `!` to the end of the
    line after it (what comes before is dropped: the gateway's framer resyncs on `/` too)."""
    out: list[bytes] = []
    while True:
        start = buffer.find(b"/")
        if start < 0:
            buffer.clear()
            return out
        end = buffer.find(b"!", start)
        if end < 0:
            del buffer[:start]
            return out
        start = buffer.rfind(b"/", start, end)  # a frame cut short by a new one: the new one
        stop = buffer.find(b"\n", end)
        if stop < 0:
            del buffer[:start]
            return out
        out.append(bytes(buffer[start : stop + 1]))
        del buffer[: stop + 1]
        if with_crc and stop - end < 5:  # "!XXXX\r\n": a CRC line too short is not a frame
            out.pop()


def crc_holds(frame: bytes) -> bool:
    """The frame's CRC line against CRC-16/ARC of `/` up to and including `!`."""
    end = frame.rfind(b"!")
    try:
        return crc16(frame[: end + 1]) == int(frame[end + 1 : end + 5], 16)
    except ValueError:
        return False


@dataclass(slots=True)
class FloorPort:
    """One open port: its descriptor, buffer and topic."""

    port: BaselinePort
    fd: int
    topic: bytes
    variant_json: str
    spec: str
    buffer: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class FloorCounters:
    """What the floor did (the names `gateway.bench.baseline` uses, where they apply)."""

    telegrams: int = 0
    checksum_errors: int = 0
    published: int = 0
    acked: int = 0
    reader_errors: int = 0


def open_port(port: BaselinePort, prefix: str) -> FloorPort:
    """Open the device raw and nonblocking at its version's line settings."""
    fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    speed = termios.B9600 if port.seven_bits else termios.B115200
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    topic = f"{prefix}/{port.variant}/telegram".encode()
    return FloorPort(port, fd, topic, json.dumps(port.variant), port.spec)


class Floor:
    """The one-thread loop: ports and stdin on one epoll, a socket to the broker."""

    def __init__(self, ports: list[FloorPort], sock: socket.socket, *, decode: bool) -> None:
        self.ports = {p.fd: p for p in ports}
        self.decode = decode
        self.sock = sock
        self.counters = FloorCounters()
        self._next_id = 0
        self._acks = bytearray()

    def run(self) -> None:
        """Until `quit` or end of stdin: read ready ports, publish what they complete."""
        epoll = select.epoll()
        stdin = sys.stdin.fileno()
        epoll.register(stdin, select.EPOLLIN)
        for fd in self.ports:
            epoll.register(fd, select.EPOLLIN)
        commands = b""
        while True:
            for fd, _mask in epoll.poll():
                if fd == stdin:
                    data = os.read(stdin, 4096)
                    if not data:
                        return
                    commands += data
                    while b"\n" in commands:
                        line, commands = commands.split(b"\n", 1)
                        if not self._command(line.strip().decode()):
                            return
                else:
                    self.read_ready(self.ports[fd], epoll)

    def _command(self, command: str) -> bool:
        """Answer one stdin command; False on `quit`."""
        if command == "quit":
            return False
        if command == "stats":
            fields = {name: getattr(self.counters, name) for name in FloorCounters.__slots__}
            print(json.dumps(fields), flush=True)
        elif command:
            print(f"error unknown command {command!r}", flush=True)
        return True

    def read_ready(self, port: FloorPort, epoll: select.epoll) -> None:
        """One read of a port `epoll` reported ready; each whole frame checked and published
        (a port whose other end is gone is counted and no longer watched)."""
        try:
            data = os.read(port.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            data, error = b"", str(exc)
        else:
            error = "end of file"
        if not data:  # the other end is gone: stop watching (no reconnects in a floor)
            self.counters.reader_errors += 1
            print(f"floor: {port.port.variant}: {error}", file=sys.stderr)
            epoll.unregister(port.fd)
            return
        seven = port.port.seven_bits
        if seven:
            data = data.translate(SEVEN_BITS)
        port.buffer += data
        for frame in frames_in(port.buffer, with_crc=not seven):
            if not seven and not crc_holds(frame):
                self.counters.checksum_errors += 1
                continue
            self.counters.telegrams += 1
            self._publish(port, frame)

    def _publish(self, port: FloorPort, frame: bytes) -> None:
        """Drain the PUBACKs that came, then write one PUBLISH."""
        try:
            while True:
                got = self.sock.recv(4096, socket.MSG_DONTWAIT)
                if not got:
                    raise ConnectionError("the broker closed the connection")
                self._acks += got
        except BlockingIOError:
            pass
        if self._acks:
            whole = len(self._acks) // 4 * 4  # PUBACK: 40 02 id id
            self.counters.acked += whole // 4
            del self._acks[:whole]
        self._next_id = self._next_id % 65535 + 1
        text = json.dumps(frame.decode("latin-1"))
        if self.decode:
            body = telegram_body(decode_telegram(frame, port.spec, crc_verified=True))
            payload = b'{"variant": %s, "raw": %s, %s}' % (
                port.variant_json.encode(),
                text.encode(),
                body,
            )
        else:
            payload = f'{{"variant": {port.variant_json}, "raw": {text}}}'.encode()
        self.sock.sendall(publish_packet(port.topic, self._next_id, payload))
        self.counters.published += 1


def connect(host: str, port: int, client_id: str, username: str, password: str) -> socket.socket:
    """A TCP connection with a CONNACK that accepted it (Nagle off, as paho sets it)."""
    sock = socket.create_connection((host, port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id, username, password))
    connack = b""
    while len(connack) < 4:
        got = sock.recv(4 - len(connack))
        if not got:
            raise ConnectionError("the broker closed the connection before CONNACK")
        connack += got
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"the broker refused the connection: {connack.hex()}")
    sock.settimeout(None)
    return sock


def run(args: argparse.Namespace) -> int:
    """Connect, open every port, answer stdin commands and read ports until `quit`."""
    password = Path(args.password_file).read_text().splitlines()[0]
    try:
        sock = connect(args.host, args.port, args.client_id, args.username, password)
    except OSError as exc:
        print(f"floor: not connected to the broker: {exc}", file=sys.stderr)
        return 1
    ports = [open_port(p, args.topic_prefix) for p in load_ports(Path(args.variants))]
    floor = Floor(ports, sock, decode=args.decode)
    print("ready", flush=True)
    floor.run()
    sock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.floor ...`."""
    parser = bridge_parser("gateway.bench.floor", __doc__, "p1-floor")
    parser.add_argument(
        "--decode",
        action="store_true",
        help="also decode each telegram and add its values (the gateway's decoder and encoder)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
