"""The baseline of `p1-gateway bench e2e`: a P1-to-MQTT bridge written the way the field does it.

    python -m gateway.bench.baseline --variants FILE --host H --port P --username U \\
        --password-file F --topic-prefix p1/rig-b/slot/bench

One thread per port, each running dsmr_parser's own `SerialReader.read` loop over pyserial:
`read(max(1, min(1024, in_waiting)))`, `TelegramBuffer.append(data.decode("ascii"))`,
`get_all()`, `TelegramParser(spec).parse(text)` (CRC checked where the spec has one). Each
telegram is published QoS 1 by one shared paho client (MQTT 3.1.1, paho's defaults) to
`PREFIX/VARIANT/telegram` as `{"variant": ..., "raw": TELEGRAM TEXT, "values":
telegram.to_json()}`: dsmr_parser's own JSON of the parsed values, plus the telegram text (as
dsmr-reader's remote datalogger forwards it), so that a subscriber can tell which telegram it
got. dsmr_parser's `SerialReader` itself is not used: it writes the device into a module-level
settings dict, so 32 of them would all read one port. Two concessions to fairness, both in the
baseline's favour: dsmr_parser's per-line error logging is silenced, and a 7-bit port's bytes
are masked to 7 bits as a real 7E1 UART delivers them (a pseudo-terminal passes the parity bit
through; dsmr_parser would fail on `decode("ascii")` otherwise).

It reads commands on stdin, one a line, answered by one line on stdout: `stats` (a JSON object
of counters), `quit`. It prints `ready` once connected with every port open.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import tomllib
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: 7E1 as a real UART hands it over: the parity bit (bit 7) is not data.
SEVEN_BITS = bytes(b & 0x7F for b in range(256))


@dataclass(frozen=True, slots=True)
class BaselinePort:
    """One port of the baseline: variant id, device path, dsmr_parser spec name."""

    variant: str
    path: str
    spec: str

    @property
    def seven_bits(self) -> bool:
        """DSMR 2.2 / 3.0: 9600 7E1 (dsmr_parser's SERIAL_SETTINGS_V2_2); else 115200 8N1."""
        return self.spec in ("V2_2", "V3")


@dataclass(slots=True)
class BaselineCounters:
    """What the baseline did (updated without locks: each field by one kind of thread)."""

    telegrams: int = 0
    checksum_errors: int = 0
    parse_errors: int = 0
    published: int = 0
    acked: int = 0
    reader_errors: int = 0


def load_ports(variants_file: Path) -> list[BaselinePort]:
    """The [[variant]] entries of a gateway variants file (id, port, spec)."""
    entries = tomllib.loads(variants_file.read_text())["variant"]
    return [BaselinePort(e["id"], e["port"], e.get("spec", "V5")) for e in entries]


def telegram_spec(name: str) -> dict[str, Any]:
    """dsmr_parser's telegram specification by name, plain text (no DLMS decryption)."""
    from dsmr_parser import telegram_specifications

    spec = deepcopy(getattr(telegram_specifications, name))
    if spec.get("general_global_cipher"):
        spec["general_global_cipher"] = False
    return dict(spec)


def read_port(port: BaselinePort, client: Any, prefix: str, counters: BaselineCounters) -> None:
    """One port's thread: dsmr_parser's SerialReader.read loop, each telegram published QoS 1."""
    import serial
    from dsmr_parser.clients.telegram_buffer import TelegramBuffer
    from dsmr_parser.exceptions import InvalidChecksumError, ParseError
    from dsmr_parser.parsers import TelegramParser

    parser = TelegramParser(telegram_spec(port.spec))
    buffer = TelegramBuffer()
    topic = f"{prefix}/{port.variant}/telegram"
    variant_json = json.dumps(port.variant)
    settings: dict[str, Any] = {
        "baudrate": 9600 if port.seven_bits else 115200,
        "bytesize": serial.SEVENBITS if port.seven_bits else serial.EIGHTBITS,
        "parity": serial.PARITY_EVEN if port.seven_bits else serial.PARITY_NONE,
        "stopbits": serial.STOPBITS_ONE,
        "xonxoff": 0,
        "rtscts": 0,
        "timeout": 20,
    }
    try:
        with serial.Serial(port.path, **settings) as handle:
            while True:
                data = handle.read(max(1, min(1024, handle.in_waiting)))
                if port.seven_bits:
                    data = data.translate(SEVEN_BITS)
                try:
                    buffer.append(data.decode("ascii"))
                except UnicodeDecodeError:
                    continue
                for text in buffer.get_all():
                    try:
                        telegram = parser.parse(text)
                    except InvalidChecksumError:
                        counters.checksum_errors += 1
                        continue
                    except ParseError:
                        counters.parse_errors += 1
                        continue
                    counters.telegrams += 1
                    payload = (
                        f'{{"variant": {variant_json}, "raw": {json.dumps(text)}, '
                        f'"values": {telegram.to_json()}}}'
                    )
                    client.publish(topic, payload, qos=1)
                    counters.published += 1
    except Exception as exc:  # the field's script would die here; count it and end the thread
        counters.reader_errors += 1
        print(f"baseline: {port.variant}: {type(exc).__name__}: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Connect, start one reader thread per port, answer stdin commands until `quit`."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)
    ports = load_ports(Path(args.variants))
    counters = BaselineCounters()
    connected = threading.Event()
    password = Path(args.password_file).read_text().splitlines()[0]

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            connected.set()

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        counters.acked += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.username_pw_set(args.username, password)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(15):
        print("baseline: not connected to the broker", file=sys.stderr)
        return 1
    for port in ports:
        threading.Thread(
            target=read_port,
            args=(port, client, args.topic_prefix, counters),
            name=f"baseline-{port.variant}",
            daemon=True,
        ).start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            fields = {name: getattr(counters, name) for name in BaselineCounters.__slots__}
            print(json.dumps(fields), flush=True)
        elif command == "quit":
            break
        elif command:
            print(f"error unknown command {command!r}", flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


def bridge_parser(module: str, doc: str | None, client_id: str) -> argparse.ArgumentParser:
    """The options `bench e2e` gives the other side's process (this baseline or the floor)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc)
    parser.add_argument("--variants", required=True, help="TOML with [[variant]] id, port, spec")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--client-id", default=client_id)
    parser.add_argument(
        "--topic-prefix", required=True, help="telegrams go to PREFIX/VARIANT/telegram"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.bench.baseline ...`."""
    parser = bridge_parser("gateway.bench.baseline", __doc__, "p1-baseline")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
