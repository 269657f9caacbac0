"""The virtual rig's meter models: one real corpus telegram per meter kind, with its line.

Each model names a corpus file whose CRC holds (or that has none: DSMR 2.2 / 3.0), the
dsmr_parser spec that reads it, the meter's telegram interval and its serial line. Intervals:
DSMR 5 and Belgian e-MUCS send every second; DSMR 2.2 to 4.2, Luxembourg, Sweden and Hungary
every 10 s. Two are assumptions, marked in their description: the Austrian Sagemcom T210-D-r
(version line 50, taken as 1 s) and the Walloon Iskra IE.5 (e-MUCS-like, taken as 1 s).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from gateway import corpus
from gateway.sim.telegram import TelegramTemplate


@dataclass(frozen=True)
class MeterModel:
    """A kind of meter the virtual rig can play."""

    id: str
    """The variant id it gets on the rig: [a-z0-9][a-z0-9-]{0,31}."""
    corpus_name: str
    spec: str
    interval_s: float
    description: str
    baudrate: int = 115200
    seven_e_one: bool = False
    """DSMR 2.2 / 3.0 line: 7 data bits, even parity (the parity bit rides in bit 7)."""
    zone: str = "Europe/Brussels"

    @cached_property
    def template(self) -> TelegramTemplate:
        """The corpus telegram, ready to render."""
        return TelegramTemplate(
            corpus.entry(self.corpus_name).read(), interval_s=self.interval_s, zone=self.zone
        )

    @property
    def line_bytes_per_s(self) -> float:
        """Characters per second on the line (start + 7 or 8 data + parity + stop = 10 bits)."""
        return self.baudrate / 10

    @property
    def line(self) -> str:
        """The serial profile as technicians write it."""
        return f"{self.baudrate} {'7E1' if self.seven_e_one else '8N1'}"


DEFAULT_RIG: tuple[MeterModel, ...] = (
    MeterModel(
        "fluvius-t211",
        "ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT.txt",
        "BELGIUM_FLUVIUS",
        1.0,
        "Sagemcom T211 three-phase, Fluvius e-MUCS 1.7.1, gas and water (real)",
    ),
    MeterModel(
        "fluvius-s211",
        "domoticz_domoticz__P1MeterSerial_szP1Test.txt",
        "BELGIUM_FLUVIUS",
        1.0,
        "Sagemcom S211 single-phase, Fluvius e-MUCS 1.3, gas (real)",
    ),
    MeterModel(
        "iskra-am550-dsmr50",
        "ndokter_dsmr_parser__TELEGRAM_V5_TWO_MBUS.txt",
        "V5",
        1.0,
        "Iskra AM550, DSMR 5.0, two M-Bus channels (real)",
    ),
    MeterModel(
        "kaifa-dsmr42",
        "athombv_node-dsmr-parser__dsmr-4.2-kfm-1.txt",
        "V4",
        10.0,
        "Kaifa, DSMR 4.2, gas (real)",
    ),
    MeterModel(
        "landisgyr-e350-dsmr40",
        "dsmrreader_dsmr-reader__test_landisgyr350_dsmr40.txt",
        "V4",
        10.0,
        "Landis+Gyr E350, DSMR 4.0, gas (real, anonymised)",
    ),
    MeterModel(
        "landisgyr-e350-dsmr42",
        "dsmrreader_dsmr-reader__test_landisgyr350_other_dsmr42.txt",
        "V4",
        10.0,
        "Landis+Gyr E350, DSMR 4.2, gas on channel 2 (real)",
    ),
    MeterModel(
        "iskra-mt382-dsmr22",
        "dsmrreader_dsmr-reader__test_iskra.txt",
        "V2_2",
        10.0,
        "Iskra MT382, DSMR 2.2, 9600 7E1, no CRC, hourly gas (real, anonymised)",
        baudrate=9600,
        seven_e_one=True,
    ),
    MeterModel(
        "kamstrup-162-dsmr22",
        "athombv_node-dsmr-parser__dsmr-2.2-kfm-1.txt",
        "V2_2",
        10.0,
        "Kamstrup 162, DSMR 2.2, 9600 7E1, no CRC (real)",
        baudrate=9600,
        seven_e_one=True,
    ),
    MeterModel(
        "smarty-lu",
        "dsmrreader_dsmr-reader__test_luxembourg_smarty.txt",
        "LUXEMBOURG_SMARTY",
        10.0,
        "Luxembourg Smarty, DSMR 4.2 based (real, decrypted, anonymised)",
    ),
    MeterModel(
        "sagemcom-t210-at",
        "ndokter_dsmr_parser__TELEGRAM_SAGEMCOM_T210_D_R.txt",
        "V5",
        1.0,
        "Sagemcom T210-D-r, Austria, Wh units, plain text (real; 1 s interval assumed from "
        "version 50; dsmr_parser's SAGEMCOM_T210_D_R spec expects the encrypted form)",
    ),
    MeterModel(
        "kamstrup-se",
        "dsmrreader_dsmr-reader__test_sweden_kamstrup.txt",
        "SWEDEN",
        10.0,
        "Kamstrup, Swedish P1, no version line (real)",
    ),
    MeterModel(
        "sagemcom-eon-hu",
        "ndokter_dsmr_parser__TELEGRAM_V5_EON_HU.txt",
        "EON_HUNGARY",
        10.0,
        "Sagemcom, E.ON Hungary, DSMR 5 based, four tariffs (real)",
    ),
    MeterModel(
        "iskra-ie5-be",
        "issue_ndokter_dsmr_parser__dp152.txt",
        "ISKRA_IE",
        1.0,
        "Iskra IE.5, Wallonia, no S/W flag (real; 1 s interval assumed)",
    ),
)


def catalogue() -> dict[str, MeterModel]:
    """The default rig's models by id."""
    return {model.id: model for model in DEFAULT_RIG}


def models_for(count: int, base: tuple[MeterModel, ...] = DEFAULT_RIG) -> list[MeterModel]:
    """`count` models cycling through `base`; ids get a -NN suffix when there are more."""
    if count <= len(base):
        return list(base[:count])
    return [
        dataclasses.replace(base[i % len(base)], id=f"{base[i % len(base)].id[:28]}-{i:02d}")
        for i in range(count)
    ]
