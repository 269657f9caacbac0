"""Meter timestamps (`YYMMDDhhmmss` plus an optional S/W flag) as RFC 3339 strings.

A DSMR / e-MUCS timestamp is local time with a flag: S (summer time) or W (winter time). The
flag picks the offset, so the repeated hour of an October night is never ambiguous: with the
zone Europe/Brussels, `231029023000S` is 02:30+02:00 and `231029023000W` is 02:30+01:00. A
timestamp without a flag (DSMR 2.2 gas, some Iskra meters) is read in the given zone; in the
repeated hour it takes the first occurrence (summer time), as dsmr_parser does.

Some values are placeholders a meter writes where it has no time: an empty M-Bus channel
(`632525252525W`, `700101010000W`) or a dummy power-failure entry (`000101000001W`). They read
as "no value" (None), never as a date. Anything else that is not a real date is invalid.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from gateway.errors import DecodeError

#: The zone of a meter whose variant names none: Belgium and the Netherlands share it.
DEFAULT_ZONE = "Europe/Brussels"

#: The 12 digits meters write where they have no time: read as None, never as a date.
PLACEHOLDER_DIGITS = frozenset({"632525252525", "700101010000", "000101000001"})

_ONE_HOUR = timedelta(hours=1)


@lru_cache(maxsize=64)
def zone_info(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA zone name; DecodeError when the name is not a known zone."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError, TypeError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise DecodeError(f"unknown time zone {name!r}") from exc


@lru_cache(maxsize=8192)
def convert(text: str, zone: str = DEFAULT_ZONE) -> tuple[str | None, bool]:
    """Read one meter timestamp: (RFC 3339 string or None, whether the text was readable).

    A placeholder gives (None, True); text that is no timestamp at all gives (None, False).
    Cached: a meter repeats the same few timestamps telegram after telegram.
    """
    digits = text[:12]
    flag = text[12:].upper()  # one Landis+Gyr E350 writes a lower-case 's'
    if len(digits) != 12 or not (digits.isascii() and digits.isdigit()) or flag not in _FLAGS:
        return None, False
    if digits in PLACEHOLDER_DIGITS:
        return None, True
    if digits[10:12] > "59":
        return None, False
    offset = _minute_offset(digits[:10], flag, zone)
    if offset is None:
        return None, False
    return (
        f"20{digits[0:2]}-{digits[2:4]}-{digits[4:6]}T{digits[6:8]}:{digits[8:10]}:"
        f"{digits[10:12]}{offset}",
        True,
    )


_FLAGS = frozenset({"", "S", "W"})


@lru_cache(maxsize=4096)
def _minute_offset(minute: str, flag: str, zone: str) -> str | None:
    """The RFC 3339 offset ('+02:00') of local minute `YYMMDDhhmm` with its flag; None if the
    minute is no real date. Offsets only change between minutes, so one computation serves
    every second of a minute."""
    try:
        naive = datetime(
            2000 + int(minute[0:2]),
            int(minute[2:4]),
            int(minute[4:6]),
            int(minute[6:8]),
            int(minute[8:10]),
        )
    except ValueError:
        return None
    offset = _offset(naive, flag, zone_info(zone))
    minutes, seconds = divmod(int(offset.total_seconds()), 60)
    if seconds:  # no zone has had such an offset since 1972; keep it exact all the same
        return naive.replace(tzinfo=timezone(offset)).isoformat()[19:]
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _offset(naive: datetime, flag: str, tz: ZoneInfo) -> timedelta:
    """The UTC offset of local time `naive` in `tz` that the S/W `flag` says ('' = the zone's)."""
    first = naive.replace(tzinfo=tz, fold=0)
    if not flag:
        return _utcoffset(first)
    summer = flag == "S"
    for candidate in (first, naive.replace(tzinfo=tz, fold=1)):
        if bool(candidate.dst()) == summer:
            return _utcoffset(candidate)
    # The flag contradicts the zone's calendar (a meter with a wrong clock or flag): the flag
    # wins, as the meter's own statement of its offset.
    standard = _utcoffset(first) - (first.dst() or timedelta(0))
    return standard + _ONE_HOUR if summer else standard


def _utcoffset(moment: datetime) -> timedelta:
    """The UTC offset of an aware datetime (zoneinfo always has one)."""
    offset = moment.utcoffset()
    return offset if offset is not None else timedelta(0)
