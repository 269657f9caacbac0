"""Wall-clock times as the gateway writes them: RFC 3339 in UTC, microseconds kept, 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339_utc(wall_ns: int) -> str:
    """An epoch-ns instant as RFC 3339 UTC with microseconds: '2026-11-28T17:03:12.123456Z'."""
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    moment = _EPOCH + timedelta(seconds=seconds, microseconds=rest // 1000)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )
