"""Telegram templates: a real corpus telegram made to advance like a live meter's.

Pure: no IO, no clock. `TelegramTemplate.render(slot, meter_time)` returns the template with
its meter time (0-0:1.0.0, S/W flag from the zone's daylight-saving rule), its M-Bus reading
times (captured every 5 minutes on 1-second meters, hourly on older ones), its energy
registers and gas readings advanced to that moment, and a freshly computed CRC (CRC-less
templates, DSMR 2.2 / 3.0, stay CRC-less). Every other line is the meter's, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

from gateway.p1 import crc_hex

DEFAULT_POWER_KW = Decimal("0.250")
"""Consumption assumed when the template's 1-0:1.7.0 reads zero, so that energy advances."""
GAS_M3_PER_HOUR = Decimal("0.300")

_TIME = re.compile(rb"^(0-0:1\.0\.0)\((\d{12})([SWsw]?)\)$")
_MBUS = re.compile(rb"^(0-\d:24\.2\.[13])\((\d{12})([SWsw]?)\)\((\d+(?:\.\d+)?)(\*m3)\)$")
_OLD_GAS = re.compile(rb"^(0-\d:24\.3\.0)\((\d{12})\)(.*)$")
_OLD_GAS_VALUE = re.compile(rb"^\((\d+(?:\.\d+)?)\)$")
_ENERGY = re.compile(rb"^1-0:([12])\.8\.(\d)\((\d+(?:\.\d+)?)\*(kWh|Wh)\)$")
_POWER = re.compile(rb"^1-0:([12])\.7\.0\((\d+(?:\.\d+)?)\*(kW|W)\)$")
_TARIFF = re.compile(rb"^0-0:96\.14\.0\((\d+)\)$")


@dataclass(frozen=True, slots=True)
class _Number:
    """A meter number's text layout: digits before and after the point."""

    integer_digits: int
    decimals: int

    @classmethod
    def of(cls, text: bytes) -> _Number:
        """The layout of a number as the meter wrote it."""
        whole, _, fraction = text.partition(b".")
        return cls(len(whole), len(fraction))

    def format(self, value: Decimal) -> bytes:
        """The value in this layout: truncated, zero-padded, wrapped like a meter's register."""
        if self.decimals:
            quantum = Decimal(1).scaleb(-self.decimals)
            value = value.quantize(quantum, rounding=ROUND_DOWN)
        else:
            value = value.to_integral_value(rounding=ROUND_DOWN)
        value = value % Decimal(10) ** self.integer_digits
        width = self.integer_digits + (self.decimals + 1 if self.decimals else 0)
        return f"{value:0{width}.{self.decimals}f}".encode("ascii")


def _placeholder(stamp: bytes) -> bool:
    """Dummy M-Bus times meters write for an empty channel: not readings to advance."""
    return stamp.startswith((b"6325", b"7001010100", b"0001010000", b"0000000000"))


class TelegramTemplate:
    """A corpus telegram that renders as the live meter would send it at any later moment."""

    def __init__(
        self,
        raw: bytes,
        *,
        interval_s: float,
        zone: str = "Europe/Brussels",
        default_power_kw: Decimal = DEFAULT_POWER_KW,
        gas_m3_per_hour: Decimal = GAS_M3_PER_HOUR,
    ) -> None:
        start = raw.find(b"/")
        bang = raw.find(b"!", start)
        if start < 0 or bang < 0:
            raise ValueError("a template needs a whole telegram: '/' through '!'")
        self.has_crc = bool(raw[bang + 1 :].strip())
        self.lines: list[bytes] = raw[start:bang].splitlines()
        while self.lines and self.lines[-1] == b"" and len(self.lines) > 1:
            self.lines.pop()
        self.interval_s = interval_s
        self.zone = ZoneInfo(zone)
        self.capture_period_s = 300 if interval_s <= 1 else 3600
        self.gas_m3_per_hour = gas_m3_per_hour
        self.tariff = 1
        self.power_kw = {1: Decimal(0), 2: Decimal(0)}
        for line in self.lines:
            if m := _TARIFF.match(line):
                self.tariff = int(m.group(1)) or 1
            elif m := _POWER.match(line):
                self.power_kw[int(m.group(1))] = _kilo(Decimal(m.group(2).decode()), m.group(3))
        self.power_overridden = self.power_kw[1] == 0 and self.power_kw[2] == 0
        if self.power_overridden:
            self.power_kw[1] = default_power_kw

    @property
    def header(self) -> bytes:
        """The identification line, '/' included."""
        return self.lines[0]

    def render(
        self,
        slot: int,
        meter_time: datetime,
        *,
        bad_crc: bool = False,
        swap: Mapping[bytes, bytes] | None = None,
    ) -> bytes:
        """The telegram of time slot `slot` (0 = the template's values) at `meter_time`.

        Values advance with elapsed = slot * interval: energy by the template's power (or
        DEFAULT_POWER_KW when it reads zero), gas by GAS_M3_PER_HOUR per capture period.
        `bad_crc` writes a CRC that does not match (CRC-less templates stay CRC-less).
        `swap` replaces the template's lines of these OBIS codes (say b"0-0:96.1.4") whole.
        """
        elapsed_h = Decimal(slot) * Decimal(str(self.interval_s)) / 3600
        start_time = meter_time - timedelta(seconds=slot * self.interval_s)
        out: list[bytes] = []
        lines = self.lines
        i = 0
        while i < len(lines):
            line = lines[i]
            if swap and (new := swap.get(line.split(b"(", 1)[0])) is not None:
                line = new
            out.append(self._line(line, elapsed_h, meter_time, start_time))
            if m := _OLD_GAS.match(line):
                # DSMR 2.2 / 3.0: the hourly gas reading stands alone on the next line.
                captured = _floor(meter_time, 3600)
                out[-1] = m.group(1) + b"(" + _stamp(captured, self.zone, b"") + b")" + m.group(3)
                if i + 1 < len(lines) and (v := _OLD_GAS_VALUE.match(lines[i + 1])):
                    value = self._gas(v.group(1), captured, start_time)
                    out.append(b"(" + value + b")")
                    i += 1
            i += 1
        body = b"\r\n".join(out) + b"\r\n!"
        if not self.has_crc:
            return body + b"\r\n"
        crc = crc_hex(body)
        if bad_crc:
            crc = f"{int(crc, 16) ^ 0x5A5A:04X}"
        return body + crc.encode("ascii") + b"\r\n"

    def _line(self, line: bytes, elapsed_h: Decimal, now: datetime, start: datetime) -> bytes:
        """One line as of `now`; lines with nothing to advance come back unchanged."""
        if not line or line[0] == 0x2F or b"(" not in line:
            return line
        if m := _TIME.match(line):
            return m.group(1) + b"(" + _stamp(now, self.zone, m.group(3)) + b")"
        if m := _ENERGY.match(line):
            direction, register = int(m.group(1)), int(m.group(2))
            advancing = register == 0 or register == self.tariff
            power = self.power_kw[direction]
            if not advancing or power == 0:
                return line
            energy = power * elapsed_h * (1000 if m.group(4) == b"Wh" else 1)
            value = Decimal(m.group(3).decode()) + energy
            number = _Number.of(m.group(3)).format(value)
            return line[: m.start(3)] + number + line[m.end(3) :]
        if self.power_overridden and (m := _POWER.match(line)) and m.group(1) == b"1":
            power = self.power_kw[1] * (1000 if m.group(3) == b"W" else 1)
            return line[: m.start(2)] + _Number.of(m.group(2)).format(power) + line[m.end(2) :]
        if (m := _MBUS.match(line)) and not _placeholder(m.group(2)):
            captured = _floor(now, self.capture_period_s)
            reading = self._gas(m.group(4), captured, start)
            stamp = _stamp(captured, self.zone, m.group(3))
            return m.group(1) + b"(" + stamp + b")(" + reading + m.group(5) + b")"
        return line

    def _gas(self, text: bytes, captured: datetime, start: datetime) -> bytes:
        """A gas (or water) reading advanced from the start's capture to `captured`."""
        first = _floor(start, self.capture_period_s)
        hours = Decimal(max(0, int((captured - first).total_seconds()))) / 3600
        value = Decimal(text.decode()) + self.gas_m3_per_hour * hours
        return _Number.of(text).format(value)


def _kilo(value: Decimal, unit: bytes) -> Decimal:
    """A power in kW from the meter's value and unit (kW or W)."""
    return value / 1000 if unit == b"W" else value


def _floor(moment: datetime, period_s: int) -> datetime:
    """The moment rounded down to a whole capture period (UTC epoch based)."""
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % period_s, UTC)


def _stamp(moment: datetime, zone: ZoneInfo, flag_style: bytes) -> bytes:
    """YYMMDDhhmmss in the zone's local time, with the S/W flag in the template's style.

    The flag is S while daylight-saving time is in force, W otherwise: what tells the
    repeated hour apart in October. A template without a flag gets none; a lower-case
    flag stays lower-case.
    """
    local = moment.astimezone(zone)
    text = local.strftime("%y%m%d%H%M%S").encode("ascii")
    if not flag_style:
        return text
    flag = b"S" if local.dst() else b"W"
    return text + (flag.lower() if flag_style.islower() else flag)
