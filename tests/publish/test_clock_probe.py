"""The clock probe (timesyncd flag, kernel state, cache) and schedule swaps on a live publisher."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.publish import Publisher, SubmitOutcome, SystemClockProbe, kernel_clock_synchronized
from tests.publish.helpers import all_day, make_telegram, schedule, settings
from tests.support.mosquitto import free_port


def test_timesyncd_flag_file_means_synchronised(tmp_path: Path) -> None:
    """The flag file's existence is enough; without it (kernel ignored) the clock is untrusted."""
    flag = tmp_path / "synchronized"
    probe = SystemClockProbe(flag, use_kernel=False, cache_s=0)
    assert probe() is False
    flag.touch()
    assert probe() is True


def test_answer_is_cached_for_cache_s(tmp_path: Path) -> None:
    """Within cache_s the first answer stands; after it the system is asked again."""
    flag = tmp_path / "synchronized"
    now = [0.0]
    probe = SystemClockProbe(flag, use_kernel=False, cache_s=1.0, monotonic=lambda: now[0])
    assert probe() is False
    flag.touch()
    now[0] = 0.5
    assert probe() is False
    now[0] = 1.0
    assert probe() is True


def test_kernel_state_is_read_without_error() -> None:
    """adjtimex(2) read-only answers True, False or None (unknown), never raises."""
    assert kernel_clock_synchronized() in (True, False, None)


def test_set_schedule_applies_to_receptions_after_the_swap(spool_dir: Path) -> None:
    """A reload swaps the schedule whole: the next reception uses the new one."""
    pub = Publisher(settings(spool_dir, None, port=free_port()), all_day("acme"))
    pub.start()
    try:
        now = time.time_ns()
        assert pub.submit_telegram("v5", make_telegram(1), 0, now) is SubmitOutcome.ROUTED
        pub.set_schedule(schedule())
        assert pub.submit_telegram("v5", make_telegram(2), 0, now) is SubmitOutcome.UNROUTED
        later = datetime.now(UTC) + timedelta(hours=1)
        pub.set_schedule(schedule(("bravo", later - timedelta(hours=3), later)))
        assert pub.submit_telegram("v5", make_telegram(3), 0, now) is SubmitOutcome.ROUTED
        assert pub.commit_now(5)
        st = pub.status()
        # 2 telegrams (telegram + raw each) and 3 session markers: acme's start, acme's end
        # (its slot gone with the first reload), bravo's start.
        assert (st.counters.routed, st.counters.unrouted, st.spooled) == (2, 1, 4 + 3)
    finally:
        pub.stop(timeout=1)
