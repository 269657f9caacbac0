"""The end-to-end benchmark's CPU readings: a process's CPU clock and each thread's run time,
to well below the kernel's 10 ms accounting tick (an idle gateway uses a few ms a second)."""

from __future__ import annotations

import os
import threading
import time

from gateway.bench.e2e.procstats import proc_cpu_s, proc_threads
from gateway.threadnames import name_this_thread


def _spin(seconds: float) -> None:
    """Burn CPU in this thread: `seconds` of its own CPU clock (work to read, not a timing)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_process_cpu_reading_is_finer_than_a_tick() -> None:
    """proc_cpu_s reads the process's own CPU clock: it falls between two reads of that clock
    taken around it (a reading in 10 ms ticks would fall short of the first)."""
    _spin(0.013)  # not a whole number of ticks
    before = time.process_time()
    reading = proc_cpu_s(os.getpid())
    after = time.process_time()
    assert before <= reading <= after, (before, reading, after)


def test_a_thread_reading_is_its_run_time() -> None:
    """proc_threads gives a named thread's run time (schedstat): while the thread waits, it falls
    between the thread's own CPU clock read before it began waiting and after it woke."""
    own: list[float] = []
    spun, done = threading.Event(), threading.Event()

    def work() -> None:
        """Spin, read the thread's own CPU clock, wait to be read, read it again."""
        name_this_thread("p1-clock-test")
        _spin(0.027)
        own.append(time.thread_time())
        spun.set()
        done.wait(10)
        own.append(time.thread_time())

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        assert spun.wait(10)
        use = proc_threads(os.getpid())["p1-clock-test"]
    finally:
        done.set()
        thread.join(10)
    assert len(own) == 2 and own[0] <= use.cpu_s <= own[1], (own, use.cpu_s)
