"""The decoder's documented behaviour: errors, times, placeholders, buffers, text, exactness."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from gateway import corpus
from gateway.errors import ChecksumError, DecodeError
from gateway.p1 import (
    SPEC_NAMES,
    Frame,
    Framer,
    crc16,
    decode,
    decode_telegram,
)
from gateway.p1.decoder import _decode_line, clear_caches
from gateway.p1.specs import Kind, plan_for
from tests.p1.telegrams import belgian, telegram

FLUVIUS = "ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT"


def _decodable() -> list[object]:
    """Every frame of the corpus that decodes (CRC valid or absent), as pytest params."""
    frames = []
    for entry in corpus.with_crc(corpus.CrcStatus.VALID, corpus.CrcStatus.ABSENT):
        for index, event in enumerate(Framer().feed(entry.read())):
            if isinstance(event, Frame) and event.crc_ok is not False:
                name = f"{entry.name.removesuffix('.txt')}#{index}"
                frames.append(pytest.param(event.raw, id=name))
    return frames


# --- Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", corpus.with_crc(corpus.CrcStatus.INVALID), ids=lambda e: e.name.removesuffix(".txt")
)
def test_every_corpus_telegram_with_a_bad_crc_raises_checksum_error(
    entry: corpus.CorpusEntry,
) -> None:
    """A corpus telegram whose CRC fails raises ChecksumError with the given and computed CRC."""
    raw = entry.read()
    with pytest.raises(ChecksumError) as caught:
        decode(raw)
    bang = raw.index(b"!")
    start = raw.rindex(b"/", 0, bang)
    assert caught.value.computed == crc16(raw[start : bang + 1])
    assert caught.value.expected is not None
    assert int(caught.value.expected, 16) != caught.value.computed
    assert raw[bang + 1 :].startswith(caught.value.expected.encode())


@pytest.mark.parametrize(
    "entry", corpus.with_crc(corpus.CrcStatus.TRUNCATED), ids=lambda e: e.name.removesuffix(".txt")
)
def test_a_telegram_without_its_end_raises_decode_error(entry: corpus.CorpusEntry) -> None:
    """A corpus file cut before its '!' is no telegram: DecodeError."""
    with pytest.raises(DecodeError):
        decode(entry.read())


@pytest.mark.parametrize(
    "raw",
    [b"", b"no slash here!1234\r\n", b"/FLU5 no end", b"\x00\xff" * 20],
)
def test_bytes_without_a_frame_raise_decode_error(raw: bytes) -> None:
    """Bytes with no '/' ... '!' frame raise DecodeError."""
    with pytest.raises(DecodeError):
        decode(raw)


def test_a_str_is_refused_with_decode_error() -> None:
    """A str (not bytes) raises DecodeError, not TypeError."""
    with pytest.raises(DecodeError):
        decode("/FLU5\r\n!\r\n")  # type: ignore[arg-type]


def test_an_unknown_spec_name_raises_decode_error() -> None:
    """An explicit spec that dsmr_parser does not define raises DecodeError, naming the known."""
    with pytest.raises(DecodeError, match="BELGIUM_FLUVIUS"):
        decode(belgian("1-0:1.8.1(000001.000*kWh)"), "BELGIUM")


def test_an_unknown_zone_raises_decode_error() -> None:
    """A zone that is no IANA zone raises DecodeError."""
    with pytest.raises(DecodeError):
        decode(belgian("0-0:1.0.0(240101120000)"), zone="Mars/Olympus_Mons")


def test_a_one_bit_change_is_a_checksum_error() -> None:
    """Changing one digit of a valid telegram makes its CRC fail."""
    raw = corpus.entry(FLUVIUS).read().replace(b"000301.548", b"000301.549")
    with pytest.raises(ChecksumError):
        decode(raw)


# --- Spec detection and explicit specs -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        (FLUVIUS, "BELGIUM_FLUVIUS"),
        ("ndokter_dsmr_parser__TELEGRAM_V2_2", "V2_2"),
        ("ndokter_dsmr_parser__TELEGRAM_V4_2", "V4"),
        ("ndokter_dsmr_parser__TELEGRAM_V5", "V5"),
        ("dsmrreader_dsmr-reader__test_luxembourg_smarty", "LUXEMBOURG_SMARTY"),
        ("dsmrreader_dsmr-reader__test_sweden_kamstrup", "SWEDEN"),
        ("ndokter_dsmr_parser__TELEGRAM_ESY5Q3DB1024_V304", "Q3D"),
        ("ndokter_dsmr_parser__TELEGRAM_SAGEMCOM_T210_D_R", "SAGEMCOM_T210_D_R"),
        ("issue_ndokter_dsmr_parser__dp152", "ISKRA_IE"),
        ("ndokter_dsmr_parser__TELEGRAM_V5_EON_HU", "EON_HUNGARY"),
        ("dsmrreader_dsmr-reader__test_landisgyr350_dsmr40", "V4"),
    ],
)
def test_auto_detects_the_spec_of_each_family(name: str, spec: str) -> None:
    """spec='auto' picks the spec from the header and version lines."""
    assert decode_telegram(corpus.entry(name).read()).spec == spec


@pytest.mark.parametrize(
    ("header", "lines", "crc", "spec"),
    [
        ("XYZ5\\1", ["0-0:96.1.4(50221)"], True, "BELGIUM_FLUVIUS"),
        ("XYZ5\\1", ["1-3:0.2.8(40)"], True, "V4"),
        ("XYZ5\\1", ["1-3:0.2.8(50)"], True, "V5"),
        ("XYZ5\\1", ["1-3:0.2.8(30)"], True, "V3"),
        ("XYZ5\\1", ["1-0:1.8.1(000001.000*kWh)"], True, "V5"),
        ("XYZ5\\1", ["1-0:1.8.1(000001.000*kWh)"], False, "V2_2"),
        ("SAG5\\T210-D-r", ["1-3:0.2.8(50)"], True, "SAGEMCOM_T210_D_R"),
        ("ISK5\\2MIE5T-200", ["1-0:1.8.1(000001.000*kWh)"], True, "ISKRA_IE"),
        ("SAG5SAG-METER", ["1-0:1.8.1(000001.000*kWh)"], True, "EON_HUNGARY"),
        ("KAM5", ["1-0:1.8.0(000001.000*kWh)"], True, "SWEDEN"),
    ],
)
def test_detection_rules(header: str, lines: list[str], crc: bool, spec: str) -> None:
    """Each documented detection rule, on a made-up telegram."""
    assert decode_telegram(telegram(*lines, header=header, crc=crc)).spec == spec


def test_an_explicit_spec_is_used_with_its_own_names() -> None:
    """spec='V4' reads a Dutch gas reading with V4's name, spec='V5' with V5's."""
    raw = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V4_2").read()
    assert decode(raw, "V4")["0-1:24.2.1"]["name"] == "HOURLY_GAS_METER_READING"
    assert decode(raw, "V5")["0-1:24.2.1"]["name"] == "MBUS_METER_READING"
    assert decode_telegram(raw, "V5").spec == "V5"


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_every_spec_name_decodes_a_telegram(spec: str) -> None:
    """Every dsmr_parser spec name works explicitly; unknown codes are kept, not dropped."""
    raw = corpus.entry(FLUVIUS).read()
    objects = decode(raw, spec)
    assert len(objects) == len(decode(raw))


def test_channel_readings_prefer_the_mbus_name() -> None:
    """0-1:96.1.1 matches V5's EQUIPMENT_IDENTIFIER and MBUS_EQUIPMENT_IDENTIFIER: MBUS wins."""
    raw = telegram("1-3:0.2.8(50)", "0-0:96.1.1(4142)", "0-1:96.1.1(4344)", header="ISK5\\2M550")
    objects = decode(raw)
    assert objects["0-0:96.1.1"]["name"] == "EQUIPMENT_IDENTIFIER"
    assert objects["0-1:96.1.1"]["name"] == "MBUS_EQUIPMENT_IDENTIFIER"


def test_telegram_carries_spec_header_meter_time_and_frame() -> None:
    """decode_telegram gives the spec used, the header without '/', the meter time, the frame."""
    entry = corpus.entry("matthijskooijman_arduino-dsmr__voorbeelden_E9F6")  # noise before '/'
    raw = entry.read()
    result = decode_telegram(raw)
    assert result.spec == "BELGIUM_FLUVIUS"
    assert result.header == "FLU5\\253769484_A"
    assert result.meter_time == "2020-02-09T12:27:51+01:00"
    assert result.raw == raw[raw.index(b"/") :]
    assert result.objects == decode(raw)


# --- Times -----------------------------------------------------------------------------------


def test_summer_and_winter_flags_give_their_offsets() -> None:
    """S means +02:00 and W means +01:00 (Europe/Brussels)."""
    objects = decode(belgian("0-0:1.0.0(230801120000S)", "1-0:1.6.0(240115080000W)(02.5*kW)"))
    assert objects["0-0:1.0.0"]["value"] == "2023-08-01T12:00:00+02:00"
    assert objects["1-0:1.6.0"]["time"] == "2024-01-15T08:00:00+01:00"


def test_the_repeated_october_hour_is_told_apart_by_its_flag() -> None:
    """02:30 on 29 October 2023 happens twice in Brussels: S is the first, W an hour later."""
    first = decode(belgian("0-0:1.0.0(231029023000S)"))["0-0:1.0.0"]["value"]
    second = decode(belgian("0-0:1.0.0(231029023000W)"))["0-0:1.0.0"]["value"]
    assert first == "2023-10-29T02:30:00+02:00"
    assert second == "2023-10-29T02:30:00+01:00"
    assert datetime.fromisoformat(second) - datetime.fromisoformat(first) == timedelta(hours=1)


def test_a_time_without_flag_uses_the_zone() -> None:
    """Without a flag the variant's zone decides (default Europe/Brussels)."""
    raw = belgian("0-0:1.0.0(240115154953)")
    assert decode(raw)["0-0:1.0.0"]["value"] == "2024-01-15T15:49:53+01:00"
    assert decode(raw, zone="Europe/London")["0-0:1.0.0"]["value"] == "2024-01-15T15:49:53+00:00"
    october = decode(belgian("0-0:1.0.0(231029023000)"))["0-0:1.0.0"]["value"]
    assert october == "2023-10-29T02:30:00+02:00"  # the repeated hour: its first occurrence


def test_a_flag_is_read_in_either_case() -> None:
    """A lower-case s (one Landis+Gyr E350 writes it) reads as S."""
    objects = decode(belgian("0-1:24.2.3(150701190000s)(00845.206*m3)"))
    assert objects["0-1:24.2.3"]["time"] == "2015-07-01T19:00:00+02:00"


@pytest.mark.parametrize(
    "stamp", ["632525252525W", "632525252525S", "700101010000W", "000101000001W"]
)
def test_placeholder_times_are_no_value(stamp: str) -> None:
    """Placeholder timestamps read as None, never as a date, and are not flagged as raw."""
    objects = decode(belgian(f"0-1:24.2.3({stamp})(00000.000)"))
    reading = objects["0-1:24.2.3"]
    assert reading == {
        "name": "MBUS_METER_READING",
        "value": Decimal("0.000"),
        "unit": None,
        "time": None,
    }


def test_an_impossible_date_is_kept_as_raw() -> None:
    """A timestamp that is no date (month 34) gives no time and keeps the line as raw."""
    line = "0-0:1.0.0(123412341234W)"
    assert decode(belgian(line))["0-0:1.0.0"] == {
        "name": "P1_MESSAGE_TIMESTAMP",
        "value": None,
        "unit": None,
        "raw": line,
    }


def test_mbus_readings_keep_their_own_timestamps() -> None:
    """Each M-Bus channel reading carries its own capture time, not the telegram's."""
    result = decode_telegram(corpus.entry(FLUVIUS).read())
    assert result.meter_time == "2023-11-02T12:15:48+01:00"
    assert result.objects["0-1:24.2.3"]["time"] == "2023-11-02T12:10:02+01:00"
    assert result.objects["0-2:24.2.1"]["time"] == "2023-11-02T12:15:32+01:00"


def test_dsmr22_gas_value_on_the_next_line_is_joined() -> None:
    """DSMR 2.2 / 3 gas: the value alone on the next line is the reading of 0-1:24.3.0."""
    objects = decode(corpus.entry("ndokter_dsmr_parser__TELEGRAM_V2_2").read())
    assert objects["0-1:24.3.0"] == {
        "name": "GAS_METER_READING",
        "value": Decimal("1.001"),
        "unit": "m3",
        "time": "2016-11-07T19:00:00+01:00",
    }
    assert "" not in objects


# --- Buffers ---------------------------------------------------------------------------------


def test_belgian_monthly_peaks_are_a_list() -> None:
    """0-0:98.1.0 becomes a list of {month, time, value, unit}; a dummy entry has time None."""
    peaks = decode(corpus.entry(FLUVIUS).read())["0-0:98.1.0"]
    assert peaks["name"] == "BELGIUM_MAXIMUM_DEMAND_13_MONTHS"
    assert peaks["value"][0] == {
        "month": "2023-08-01T00:00:00+02:00",
        "time": None,
        "value": Decimal("0.000"),
        "unit": "kW",
    }
    assert peaks["value"][3] == {
        "month": "2023-11-01T00:00:00+01:00",
        "time": "2023-10-16T13:00:00+02:00",
        "value": Decimal("4.927"),
        "unit": "kW",
    }
    assert len(peaks["value"]) == 4 and "raw" not in peaks


@pytest.mark.parametrize("groups", ["(0)", "(0)(1-0:1.6.0)(1-0:1.6.0)"])
def test_an_empty_peak_buffer_is_an_empty_list(groups: str) -> None:
    """0-0:98.1.0(0) holds no peaks: an empty list."""
    peaks = decode(belgian(f"0-0:98.1.0{groups}"))["0-0:98.1.0"]
    assert peaks == {"name": "BELGIUM_MAXIMUM_DEMAND_13_MONTHS", "value": [], "unit": None}


def test_a_peak_buffer_shorter_than_its_count_keeps_what_it_has_and_the_line() -> None:
    """0-0:98.1.0(12) with no entries (a Swiss XT211 sends it): [] plus the raw line."""
    peaks = decode(belgian("0-0:98.1.0(12)"))["0-0:98.1.0"]
    assert peaks["value"] == [] and peaks["raw"] == "0-0:98.1.0(12)"


def test_the_power_failure_log_is_a_list_with_dummy_entries_kept() -> None:
    """1-0:99.97.0 becomes a list of {time, value, unit}; Kaifa's dummy entry has time None."""
    log = decode(corpus.entry("dsmrreader_dsmr-reader__test_kaifa_dsmr42").read())["1-0:99.97.0"]
    assert log == {
        "name": "POWER_EVENT_FAILURE_LOG",
        "value": [{"time": None, "value": 2147483647, "unit": "s"}],
        "unit": None,
    }


@pytest.mark.parametrize("groups", ["()", "(0)", "(0)(0-0:96.7.19)"])
def test_an_empty_power_failure_log_is_an_empty_list(groups: str) -> None:
    """1-0:99.97.0() (Iskra) and a zero count are empty lists."""
    raw = telegram("1-3:0.2.8(50)", f"1-0:99.97.0{groups}", header="ISK5\\2M550T-1011")
    assert decode(raw)["1-0:99.97.0"]["value"] == []


def test_a_power_failure_log_with_a_real_event() -> None:
    """An event's end time and its duration as an int in seconds."""
    line = "1-0:99.97.0(1)(0-0:96.7.19)(230412101512S)(0000000240*s)"
    log = decode(telegram("1-3:0.2.8(50)", line, header="ISK5\\2M550T-1011"))["1-0:99.97.0"]
    assert log["value"] == [{"time": "2023-04-12T10:15:12+02:00", "value": 240, "unit": "s"}]


# --- Unknown codes, text, identifiers ------------------------------------------------------------


def test_lines_with_unknown_codes_are_kept_with_their_text() -> None:
    """A code the spec does not know keeps its group text(s) and the line, with name None."""
    objects = decode(belgian("1-0:94.32.1(400)", "0-0:96.99.9(1*A)(2*B)"))
    assert objects["1-0:94.32.1"] == {
        "name": None,
        "value": "400",
        "unit": None,
        "raw": "1-0:94.32.1(400)",
    }
    assert objects["0-0:96.99.9"]["value"] == ["1*A", "2*B"]


def test_a_known_code_in_an_unexpected_form_keeps_its_name_and_line() -> None:
    """A tariff register that is not a number: value None, the line as raw."""
    objects = decode(belgian("1-0:1.8.1(abc*kWh)", "1-0:1.8.2(1(2)"))
    assert objects["1-0:1.8.1"] == {
        "name": "ELECTRICITY_USED_TARIFF_1",
        "value": None,
        "unit": None,
        "raw": "1-0:1.8.1(abc*kWh)",
    }
    assert objects["1-0:1.8.2"]["raw"] == "1-0:1.8.2(1(2)"


def test_a_repeated_code_is_kept_under_a_numbered_key() -> None:
    """Two lines with the same code: both kept, the second as 'CODE#2'."""
    objects = decode(belgian("1-0:1.8.1(000001.000*kWh)", "1-0:1.8.1(000002.000*kWh)"))
    assert objects["1-0:1.8.1"]["value"] == Decimal("1.000")
    assert objects["1-0:1.8.1#2"]["value"] == Decimal("2.000")


def test_hex_identifiers_keep_their_hex_and_add_text() -> None:
    """Equipment ids stay hex in 'value' and gain the decoded 'text'; others do not."""
    objects = decode(corpus.entry(FLUVIUS).read())
    assert objects["0-0:96.1.1"]["value"] == "3153414733313030373231333236"
    assert objects["0-0:96.1.1"]["text"] == "1SAG3100721326"
    assert objects["0-1:96.1.1"]["text"] == "7FLO2123088027"
    assert "text" not in objects["0-0:96.1.4"]  # 50217: a version, not hex text
    assert "text" not in objects["0-0:96.14.0"]  # 0001: a tariff


def test_hex_that_is_not_printable_text_gets_no_text() -> None:
    """An id whose hex decodes to control bytes keeps only its value."""
    objects = decode(belgian("0-0:96.1.1(00000000000000)", "0-1:96.1.1(XYZ123)"))
    assert objects["0-0:96.1.1"] == {
        "name": "BELGIUM_EQUIPMENT_IDENTIFIER",
        "value": "00000000000000",
        "unit": None,
    }
    assert "text" not in objects["0-1:96.1.1"]


def test_a_text_message_longer_than_2kb_decodes() -> None:
    """0-0:96.13.0 with 1024 characters (2048 hex digits) on one line of over 2 KB."""
    message = ("Meter message " * 80)[:1024]
    line = f"0-0:96.13.0({message.encode('ascii').hex().upper()})"
    assert len(line) > 2048
    objects = decode(belgian(line))
    assert objects["0-0:96.13.0"]["text"] == message


# --- Exactness, line ends, caches ------------------------------------------------------------


def _meter_number_text(line: str) -> str:
    """The number as the meter wrote it on a line: the last group, before any '*unit'."""
    group = line.rstrip().rsplit("(", 1)[1].rstrip(")")
    return group.partition("*")[0]


def _lines_by_code(raw: bytes) -> dict[str, str]:
    """Each line of a telegram by its code (the DSMR 2.2 gas value joined to its code)."""
    text = raw.decode("latin-1").replace("\r\n(", "(").replace("\n(", "(")
    lines = {}
    for line in text.replace("\r", "").split("\n")[1:]:
        lines.setdefault(line.partition("(")[0], line)
    return lines


@pytest.mark.parametrize("raw", _decodable())
def test_every_number_keeps_the_meters_digits(raw: bytes) -> None:
    """Decimal(str(value)) == Decimal(meter text), and str(value) is that text minus leading 0s."""
    result = decode_telegram(raw)
    lines = _lines_by_code(raw)
    checked = 0
    for code, obj in result.objects.items():
        kind = plan_for(result.spec, code).kind
        if (
            kind not in (Kind.DECIMAL, Kind.INTEGER, Kind.MBUS, Kind.MBUS_V2)
            or obj["value"] is None
        ):
            continue
        meter = _meter_number_text(lines[code])
        value = obj["value"]
        assert Decimal(str(value)) == Decimal(meter)
        expected = meter.lstrip("0")
        if not expected or expected.startswith("."):
            expected = "0" + expected
        assert str(value) == expected
        assert json.loads(str(value), parse_float=Decimal, parse_int=Decimal) == Decimal(meter)
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("raw", _decodable())
def test_inline_paths_agree_with_the_general_line_decoder(raw: bytes) -> None:
    """For every corpus line, the decoder's fast path gives what `_decode_line` defines."""
    clear_caches()
    result = decode_telegram(raw)
    lines = _lines_by_code(raw)
    for code, obj in result.objects.items():
        general = _decode_line(plan_for(result.spec, code), lines[code], "Europe/Brussels")
        assert obj == general, code


def test_lf_only_line_ends_decode_like_crlf() -> None:
    """A telegram whose lines end in LF alone gives the same objects."""
    lines = (
        "0-0:1.0.0(240115080000W)",
        "1-0:1.8.1(000001.500*kWh)",
        "0-1:24.2.3(240115075500W)(00012.345*m3)",
    )
    assert decode(telegram(*lines, eol="\n")) == decode(telegram(*lines))


def test_repeated_decodes_give_equal_but_independent_objects() -> None:
    """The line memo hands out copies: changing a result changes no later result."""
    raw = corpus.entry(FLUVIUS).read()
    first = decode(raw)
    first["1-0:1.8.1"]["value"] = Decimal("-1")
    first["0-0:98.1.0"]["value"][0]["value"] = Decimal("-1")
    first["0-0:98.1.0"]["value"].clear()
    second = decode(raw)
    assert second["1-0:1.8.1"]["value"] == Decimal("301.548")
    assert len(second["0-0:98.1.0"]["value"]) == 4
    assert second["0-0:98.1.0"]["value"][0]["value"] == Decimal("0.000")
    clear_caches()
    assert decode(raw) == second


def test_the_zone_is_part_of_what_a_line_decodes_to() -> None:
    """The same line decodes per zone (the memo does not mix zones)."""
    raw = belgian("0-0:1.0.0(240115080000)")
    assert decode(raw, zone="Europe/Brussels")["0-0:1.0.0"]["value"].endswith("+01:00")
    assert decode(raw, zone="UTC")["0-0:1.0.0"]["value"].endswith("+00:00")


def test_the_line_memo_stays_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny memo, many changing telegrams still decode as with no memo at all."""
    from gateway.p1 import decoder

    monkeypatch.setattr(decoder, "MAX_MEMO_LINES", 8)
    clear_caches()
    for step in range(40):
        raw = belgian(
            "0-0:96.1.1(3153414733313030373231333236)",
            f"0-0:1.0.0(2401151200{step:02d}W)",
            f"1-0:1.7.0({step:02d}.123*kW)",
            "1-0:1.8.1(000301.548*kWh)",
        )
        warm = decode(raw)
        sizes = decoder.memo_sizes()
        assert sizes and all(size <= 8 + 5 for size in sizes)
        clear_caches()
        assert decode(raw) == warm
        assert warm["1-0:1.7.0"]["value"] == Decimal(f"{step}.123")
