"""Telegram templates: real corpus telegrams that advance like a live meter's."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser

from gateway import corpus
from gateway.p1 import Frame, Framer, crc_hex
from gateway.sim import DEFAULT_RIG, MeterModel, TelegramTemplate, catalogue

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _frames(data: bytes) -> list[Frame]:
    """Frame a byte stream, keeping whole frames only."""
    return [f for f in Framer().feed(data) if isinstance(f, Frame)]


def _value(raw: bytes, obis: bytes) -> bytes:
    """The first parenthesised value of an OBIS line."""
    m = re.search(re.escape(obis) + rb"\(([^)]*)\)", raw)
    assert m, obis
    return m.group(1)


@pytest.mark.parametrize("model", DEFAULT_RIG, ids=lambda m: m.id)
def test_every_default_model_renders_frames_the_reference_parser_reads(model: MeterModel) -> None:
    """Each rendered telegram frames with a valid CRC (or none) and parses with its spec."""
    tpl = model.template
    data = b"".join(tpl.render(i, T0 + timedelta(seconds=i * model.interval_s)) for i in range(3))
    frames = _frames(data)
    assert len(frames) == 3
    parser = TelegramParser(getattr(telegram_specifications, model.spec))
    for frame in frames:
        assert frame.crc_ok is (True if tpl.has_crc else None)
        parser.parse(frame.raw.decode("ascii"))  # raises if the telegram is not readable


@pytest.mark.parametrize("model", DEFAULT_RIG, ids=lambda m: m.id)
def test_default_models_use_real_corpus_telegrams_whose_crc_holds_or_is_absent(
    model: MeterModel,
) -> None:
    """The default rig replays corpus files marked valid-CRC or CRC-less, ids contract-safe."""
    assert corpus.entry(model.corpus_name).crc in (corpus.CrcStatus.VALID, corpus.CrcStatus.ABSENT)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", model.id)


def test_default_rig_covers_both_intervals_and_both_lines() -> None:
    """One-second and ten-second meters, 115200 8N1 and 9600 7E1 lines, CRC and CRC-less."""
    models = catalogue()
    assert {m.interval_s for m in models.values()} == {1.0, 10.0}
    assert {m.line for m in models.values()} == {"115200 8N1", "9600 7E1"}
    assert {m.template.has_crc for m in models.values()} == {True, False}
    for model in models.values():
        assert model.seven_e_one == (model.spec in ("V2_2", "V3"))


def test_meter_time_advances_with_the_slot_and_the_crc_is_recomputed() -> None:
    """0-0:1.0.0 carries the meter time given; the CRC matches the new bytes."""
    tpl = catalogue()["iskra-am550-dsmr50"].template
    a = tpl.render(0, T0)
    b = tpl.render(1, T0 + timedelta(seconds=1))
    assert _value(a, b"0-0:1.0.0") == b"260301130000W"  # 12:00 UTC = 13:00 CET
    assert _value(b, b"0-0:1.0.0") == b"260301130001W"
    bang = b.rindex(b"!")
    assert b[bang + 1 : bang + 5].decode() == crc_hex(b[: bang + 1])
    assert b.endswith(b"\r\n")


def test_summer_time_flag_and_the_repeated_october_hour() -> None:
    """S while daylight-saving time holds, W after; the repeated 02:xx hour is told apart."""
    tpl = catalogue()["fluvius-t211"].template
    before = datetime(2026, 10, 25, 0, 59, 59, tzinfo=UTC)  # 02:59:59 CEST
    after = before + timedelta(seconds=1)  # 02:00:00 CET
    assert _value(tpl.render(0, before), b"0-0:1.0.0") == b"261025025959S"
    assert _value(tpl.render(1, after), b"0-0:1.0.0") == b"261025020000W"
    spring = datetime(2026, 3, 29, 1, 0, 0, tzinfo=UTC)  # 03:00 CEST, just after the jump
    assert _value(tpl.render(0, spring), b"0-0:1.0.0") == b"260329030000S"


def test_energy_advances_with_power_and_keeps_the_meter_layout() -> None:
    """The active tariff's register grows by power x time, same digits; the other stays."""
    model = catalogue()["kaifa-dsmr42"]  # tariff 2, 1.7.0 = 0 and 2.7.0 = 1.869 kW
    tpl = model.template
    hour_later = tpl.render(360, T0 + timedelta(hours=1))  # 360 slots of 10 s
    first = tpl.render(0, T0)
    assert _value(first, b"1-0:2.8.2") == b"007764.691*kWh"
    assert _value(hour_later, b"1-0:2.8.2") == b"007766.560*kWh"  # + 1.869 kWh
    assert _value(hour_later, b"1-0:2.8.1") == _value(first, b"1-0:2.8.1")
    assert _value(hour_later, b"1-0:1.8.2") == _value(first, b"1-0:1.8.2")


def test_zero_power_templates_get_a_small_load_so_energy_still_advances() -> None:
    """A template reading 0 kW both ways is given 0.250 kW, shown in 1.7.0 and counted."""
    tpl = catalogue()["kamstrup-se"].template
    later = tpl.render(360, T0 + timedelta(hours=1))
    assert _value(later, b"1-0:1.7.0") == b"0000.250*kW"
    start = Decimal(_value(tpl.render(0, T0), b"1-0:1.8.0").split(b"*")[0].decode())
    end = Decimal(_value(later, b"1-0:1.8.0").split(b"*")[0].decode())
    assert end - start == Decimal("0.250")


def test_watt_hour_registers_advance_in_whole_watt_hours() -> None:
    """Austrian Wh registers stay nine-digit integers and grow in Wh."""
    tpl = catalogue()["sagemcom-t210-at"].template
    first, later = tpl.render(0, T0), tpl.render(3600, T0 + timedelta(hours=1))
    assert _value(first, b"1-0:1.8.0") == b"006545766*Wh"
    assert _value(later, b"1-0:1.8.0") == b"006546052*Wh"  # + 286 W x 1 h


def test_mbus_readings_are_captured_every_five_minutes_on_one_second_meters() -> None:
    """Gas time is the last 5-minute boundary; placeholders are left alone."""
    tpl = catalogue()["iskra-am550-dsmr50"].template
    raw = tpl.render(754, T0 + timedelta(seconds=754))  # 12:12:34 UTC
    assert b"0-2:24.2.1(260301131000W)(" in raw
    assert b"0-1:24.2.1(700101010000W)(00000000)" in raw  # empty channel placeholder


def test_old_meters_write_hourly_gas_on_its_own_line_without_flag() -> None:
    """DSMR 2.2: 0-1:24.3.0 carries the whole hour, no flag; the value line advances."""
    tpl = catalogue()["iskra-mt382-dsmr22"].template
    raw = tpl.render(720, T0 + timedelta(hours=2, minutes=5))
    assert b"0-1:24.3.0(260301150000)(2C)(60)(1)(0-1:24.2.1)(m3)\r\n(07891.293)\r\n" in raw
    assert raw.endswith(b"\r\n!\r\n")


def test_templates_without_a_flag_or_with_a_lower_case_flag_keep_their_style() -> None:
    """The Iskra IE.5 writes no S/W flag; the L+G E350 writes its gas flag in lower case."""
    ie5 = catalogue()["iskra-ie5-be"].template.render(0, T0)
    assert _value(ie5, b"0-0:1.0.0") == b"260301130000"
    lg = catalogue()["landisgyr-e350-dsmr40"].template.render(0, T0)
    assert re.search(rb"0-1:24\.2\.1\(\d{12}w\)", lg)


def test_bad_crc_writes_a_wrong_crc() -> None:
    """render(bad_crc=True) gives a frame whose CRC does not hold."""
    tpl = catalogue()["fluvius-s211"].template
    (frame,) = _frames(tpl.render(5, T0, bad_crc=True))
    assert frame.crc_ok is False


def test_a_template_needs_a_whole_telegram() -> None:
    """Bytes without '/' ... '!' cannot be a template."""
    with pytest.raises(ValueError):
        TelegramTemplate(b"1-0:1.8.1(000001.000*kWh)\r\n", interval_s=1.0)
