"""`p1-gateway tap` behind a real gateway daemon on a virtual rig, read by dsmr_parser's readers.

dsmr_parser's own `SocketReader` (what Home Assistant's DSMR integration uses in network mode)
reads the tap's TCP port and its own `SerialReader` the tap's pty, both unchanged; what they
decode equals the gateway's decoded payload of the same telegram (same seq), and after the
slot passes to another holder nothing of that holder's reaches the tap.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from dsmr_parser import telegram_specifications
from dsmr_parser.clients.serial_ import SerialReader
from dsmr_parser.clients.settings import SERIAL_SETTINGS_V5
from dsmr_parser.clients.socket_ import SocketReader

from gateway.devkit.mosquitto import free_port, wait_until
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe
from tests.tap.helpers import StreamReader, TapProcess, frames_of, tap_args

TCP_VARIANT = "fluvius-t211"
PTY_VARIANT = "iskra-am550-dsmr50"


def payloads(probe: MqttProbe, holder: str, variant: str, kind: str) -> list[bytes]:
    """What `probe` received on one of `holder`'s topics."""
    topic = f"p1/{RIG_ID}/slot/{holder}/{variant}/{kind}"
    return [m.payload for m in probe.snapshot(lambda t: t == topic)]


def read_in_thread(read: Callable[[], Iterator[Any]], into: list[Any]) -> threading.Thread:
    """Run a dsmr_parser reader's generator in a thread, collecting its telegrams."""

    def run() -> None:
        try:
            for telegram in read():
                into.append(telegram)
        except OSError:
            return  # the tap stopped: its port went away

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def check_values(parsed: Any, decoded: dict[str, Any]) -> int:
    """dsmr_parser's values against the gateway's decoded objects (electricity lines with a
    single value); the number of values compared."""
    compared = 0
    for code, obj in decoded["objects"].items():
        name, value = obj.get("name"), obj.get("value")
        if not code.startswith("1-0:") or name is None or isinstance(value, list | dict):
            continue
        theirs = getattr(parsed, name)
        assert Decimal(str(theirs.value)) == Decimal(str(value)), (code, theirs.value, value)
        assert (theirs.unit or None) == obj.get("unit"), (code, theirs.unit, obj.get("unit"))
        compared += 1
    return compared


def decoded_of(probe: MqttProbe, variant: str) -> list[dict[str, Any]]:
    """The decoded payloads acme's probe received for `variant` (numbers as Decimal)."""
    texts = payloads(probe, "acme", variant, "telegram")
    return [json.loads(text, parse_float=Decimal) for text in texts]


def match_and_check(parsed: list[Any], decoded: Callable[[], list[dict[str, Any]]]) -> None:
    """Each telegram dsmr_parser read is one the gateway decoded (by meter time): same values."""
    assert parsed
    times = [telegram.P1_MESSAGE_TIMESTAMP.value for telegram in parsed]

    def by_time() -> dict[datetime, dict[str, Any]]:
        return {datetime.fromisoformat(d["meter_time"]): d for d in decoded()}

    # The probe may still be taking the decoded twin of the last telegram read.
    assert wait_until(lambda: set(times) <= set(by_time()), 5)
    ours = by_time()
    for telegram, when in zip(parsed, times, strict=True):
        assert check_values(telegram, ours[when]) >= 5, ours[when]["seq"]


def test_dsmr_parsers_readers_read_the_tap_as_the_meters_port(tmp_path: Path) -> None:
    """SocketReader on --tcp and SerialReader on --pty decode what the gateway decoded; a bad
    CRC frame comes through byte for byte; after a handover nothing of beta's comes."""
    with GatewayHarness() as h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        beta = h.probe("beta", [f"p1/{RIG_ID}/slot/beta/#"])
        port, pty = free_port(), tmp_path / "p1-iskra"
        tap = TapProcess(
            tmp_path,
            [
                *tap_args(h.broker, tmp_path),
                "--tcp", f"{TCP_VARIANT}=127.0.0.1:{port}",
                "--pty", f"{PTY_VARIANT}={pty}",
            ],
        )  # fmt: skip
        try:
            assert tap.said("subscribed"), tap.log()
            raw_stream = StreamReader("127.0.0.1", port)  # a second client of the same port
            over_tcp: list[Any] = []
            over_pty: list[Any] = []
            socket_reader = SocketReader("127.0.0.1", port, telegram_specifications.BELGIUM_FLUVIUS)
            serial_reader = SerialReader(
                str(pty), dict(SERIAL_SETTINGS_V5), telegram_specifications.V5
            )
            read_in_thread(socket_reader.read, over_tcp)
            read_in_thread(serial_reader.read, over_pty)
            assert wait_until(lambda: len(over_tcp) >= 3 and len(over_pty) >= 3, 30), tap.log()

            h.rig.meter(TCP_VARIANT).corrupt_crc(1)
            assert wait_until(lambda: payloads(acme, "acme", TCP_VARIANT, "invalid"), 15)
            bad = json.loads(payloads(acme, "acme", TCP_VARIANT, "invalid")[0])
            evidence = bad["raw"].encode("latin-1")
            assert wait_until(lambda: evidence in raw_stream.data, 10), tap.log()

            for variant, parsed in ((TCP_VARIANT, over_tcp), (PTY_VARIANT, over_pty)):
                match_and_check(list(parsed), lambda v=variant: decoded_of(acme, v))

            now = datetime.now(UTC)
            h.write_slots(
                [("acme", now - timedelta(hours=1), now), ("beta", now, now + timedelta(hours=2))]
            )
            h.signal(signal.SIGHUP)
            assert wait_until(lambda: len(payloads(beta, "beta", TCP_VARIANT, "raw")) >= 2, 20), (
                h.log()
            )
            time.sleep(1.0)  # anything of beta's that leaked would have come through by now
            acme_raws = set(payloads(acme, "acme", TCP_VARIANT, "raw")) | {evidence}
            beta_raws = set(payloads(beta, "beta", TCP_VARIANT, "raw"))
            frames = frames_of(raw_stream.data)
            assert frames and set(frames) <= acme_raws
            assert not set(frames) & beta_raws
            assert tap.stop() == 0
            assert f"{TCP_VARIANT}: " in tap.log() and "clients" in tap.log()
            raw_stream.close()
        finally:
            tap.kill()
            acme.stop()
            beta.stop()
