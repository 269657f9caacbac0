"""rfc3339_utc: the same text as datetime gives, whatever order the instants come in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from gateway.timefmt import rfc3339_utc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANTS = st.integers(min_value=0, max_value=253402300798_000_000_000)  # + a step: < 10000


def _reference(wall_ns: int) -> str:
    """datetime's own RFC 3339 text, microseconds kept, 'Z' for UTC."""
    moment = _EPOCH + timedelta(microseconds=wall_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


@given(st.lists(_INSTANTS, min_size=1, max_size=20), st.integers(0, 999_999_999))
def test_matches_datetime_within_and_across_seconds(instants: list[int], step: int) -> None:
    """Each instant, and one later in the same or the next second: datetime's text."""
    for wall_ns in instants:
        for t in (wall_ns, wall_ns + step):
            assert rfc3339_utc(t) == _reference(t)
