"""The decoded telegram: what the P1 engine hands to the rest of the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: One object of a telegram, keyed by OBIS code in `Telegram.objects`: at least "name"
#: (dsmr_parser's value name, or None for a code the spec does not know) and "value".
#: Numbers are `decimal.Decimal` (exact, the meter's digits) or `int`; text and identifiers
#: are `str` as the meter wrote them; times are RFC 3339 strings; buffers are lists of dicts.
TelegramObject = Mapping[str, Any]

#: The decoder's record of one line it decoded: (OBIS code, the decoded object, whether its
#: value is a list). While the decoder's line memo holds it, every telegram that carries the
#: same line (same text, spec and zone) gets the same record, and the object in it is never
#: changed: what a consumer derives from a line it may memoise by the record's identity (the
#: payload encoder memoises each line's JSON so). Read-only: it is the memo's own entry.
LineRecord = tuple[str, TelegramObject, bool]


@dataclass(frozen=True, slots=True)
class Telegram:
    """One decoded telegram: its exact bytes, the spec that read it, and its objects."""

    raw: bytes
    """The exact bytes, '/' through the CRC line's CR LF."""
    spec: str
    """The dsmr_parser telegram specification name that decoded it (V5, BELGIUM_FLUVIUS...)."""
    header: str
    """The identification line without its leading '/' (say 'FLU5\\253769484_A')."""
    meter_time: str | None
    """The meter's own timestamp (0-0:1.0.0) as RFC 3339, None when absent."""
    objects: Mapping[str, TelegramObject]
    """The contract's objects mapping, keyed by the OBIS code as the meter wrote it.
    Read-only once decoded: `lines` (and what consumers memoise by it) describes it. To send
    other objects, make a Telegram of them without `lines`."""
    lines: tuple[LineRecord | None, ...] | None = None
    """Per object of `objects`, in order, the decoder's record of its line (its code is the
    very key, its object equal to the value); None for an object decoded outside the memo.
    None as a whole when the decoder could not pair lines and objects one to one."""
