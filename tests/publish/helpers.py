"""Builders for publisher tests: telegrams, settings, and a reader of what testers received."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway import corpus
from gateway.p1.telegram import Telegram
from gateway.publish import (
    MqttSettings,
    PublisherSettings,
    Slot,
    SlotSchedule,
    SpoolSettings,
)
from tests.support.mosquitto import MosquittoBroker, Received

RIG = "rig-a"
PASSWORDS = {
    "rig-a": "rig-a-pw",
    "acme": "acme-pw",
    "bravo": "bravo-pw",
    "banned": "banned-pw",
    "observer": "observer-pw",
}
#: Test-only ACL additions: an observer that reads everything (to prove testers' publishes
#: go nowhere), and a holder whose slot topics the rig may not write (to provoke 0x87).
EXTRA_ACL = """
user observer
topic read #
user rig-a
topic deny p1/rig-a/slot/banned/#
"""

_RAW = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5").read()


def make_telegram(n: int, raw: bytes = _RAW) -> Telegram:
    """A telegram whose objects carry `n` (exact Decimals, leading zeros as a meter writes)."""
    objects: dict[str, Any] = {
        "1-3:0.2.8": {"name": "P1_MESSAGE_HEADER", "value": "50", "unit": None},
        "1-0:1.8.1": {
            "name": "ELECTRICITY_USED_TARIFF_1",
            "value": Decimal(f"{n:06d}.426"),
            "unit": "kWh",
        },
        "1-0:1.7.0": {
            "name": "CURRENT_ELECTRICITY_USAGE",
            "value": Decimal("00.244"),
            "unit": "kW",
        },
        "0-0:96.14.0": {"name": "ELECTRICITY_ACTIVE_TARIFF", "value": "0002", "unit": None},
        "0-1:24.2.1": {
            "name": "HOURLY_GAS_METER_READING",
            "value": Decimal("00000.107"),
            "unit": "m3",
            "time": "2017-01-02T15:10:05+01:00",
        },
        "9-9:9.9.9": {"name": None, "value": "unknown line kept", "unit": None},
    }
    return Telegram(
        raw=raw,
        spec="V5",
        header="ISk5\\2MT382-1000",
        meter_time="2017-01-02T19:20:02+01:00",
        objects=objects,
    )


def counter_of(payload: dict[str, Any]) -> int:
    """The `n` a telegram payload was made from."""
    return int(Decimal(str(payload["objects"]["1-0:1.8.1"]["value"])))


def settings(
    spool_dir: Path,
    broker: MosquittoBroker | None,
    *,
    rig: str = RIG,
    batch_interval: float = 0.2,
    require_sync: bool = False,
    port: int | None = None,
    protocol: str = "5",
    keepalive: int = 30,
    **spool: Any,
) -> PublisherSettings:
    """Publisher settings against `broker` (or a closed port) with a spool in `spool_dir`."""
    return PublisherSettings(
        rig=rig,
        mqtt=MqttSettings(
            host="127.0.0.1",
            port=port or (broker.port if broker else 1),
            username=rig,
            password=PASSWORDS.get(rig, "x"),
            client_id=f"p1gw-{rig}-{spool_dir.name}",
            reconnect_min_delay=1,
            reconnect_max_delay=2,
            protocol=protocol,
            keepalive=keepalive,
        ),
        spool=SpoolSettings(dir=spool_dir, batch_interval=batch_interval, **spool),
        require_sync=require_sync,
    )


def schedule(*slots: tuple[str, datetime, datetime]) -> SlotSchedule:
    """A schedule from (holder, start, end) triples."""
    return SlotSchedule(Slot(h, s, e) for h, s, e in slots)


def all_day(holder: str = "acme") -> SlotSchedule:
    """One slot for `holder` around now (a day either side)."""
    now = datetime.now(UTC)
    return schedule((holder, now - timedelta(days=1), now + timedelta(days=1)))


@dataclass(frozen=True, slots=True)
class Got:
    """One telegram payload as a tester received it."""

    topic: str
    variant: str
    seq: int
    payload: dict[str, Any]
    raw: bytes


def telegrams(messages: Iterable[Received], kind: str = "telegram") -> list[Got]:
    """The JSON payloads received on `.../telegram` (or `.../invalid`) topics, in order."""
    out = []
    for m in messages:
        if m.topic.endswith("/" + kind):
            data = json.loads(m.payload, parse_float=Decimal)
            out.append(Got(m.topic, data["variant"], data["seq"], data, m.payload))
    return out


def check_order(got: list[Got]) -> tuple[dict[str, list[int]], int]:
    """Per variant: the seqs in first-arrival order, and how many arrivals were duplicates.

    Asserts that a repeat carries the very same payload as the first arrival of its seq.
    """
    first: dict[tuple[str, int], bytes] = {}
    order: dict[str, list[int]] = {}
    dups = 0
    for g in got:
        key = (g.variant, g.seq)
        if key in first:
            assert first[key] == g.raw, f"seq {key} repeated with a different payload"
            dups += 1
            continue
        first[key] = g.raw
        order.setdefault(g.variant, []).append(g.seq)
    return order, dups
