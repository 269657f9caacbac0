"""Wall-clock times as the gateway writes them: RFC 3339 in UTC, microseconds kept, 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The last whole second formatted, and its text up to the seconds: most calls within a
#: second (a telegram's payload, every port's health) share it. One tuple, swapped whole.
_last: tuple[int, str] = (0, "1970-01-01T00:00:00")


def rfc3339_utc(wall_ns: int) -> str:
    """An epoch-ns instant as RFC 3339 UTC with microseconds: '2026-11-28T17:03:12.123456Z'."""
    global _last
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    second, prefix = _last
    if second != seconds:
        moment = _EPOCH + timedelta(seconds=seconds)
        prefix = (
            f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}"
        )
        _last = (seconds, prefix)
    return f"{prefix}.{rest // 1000:06d}Z"
