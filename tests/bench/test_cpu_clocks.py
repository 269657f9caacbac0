"""The end-to-end benchmark's CPU readings: a process's CPU clock and each thread's run time,
to well below the kernel's 10 ms accounting tick (an idle gateway uses a few ms a second)."""

from __future__ import annotations

import os
import threading
import time

from gateway.bench_e2e import proc_cpu_s, proc_threads
from gateway.threadnames import name_this_thread


def _spin(seconds: float) -> None:
    """Burn CPU in this thread for about `seconds` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_process_cpu_reading_is_finer_than_a_tick() -> None:
    """proc_cpu_s reads the process's CPU-time clock: it agrees with process_time() to 1 ms."""
    _spin(0.013)  # not a whole number of ticks
    assert abs(proc_cpu_s(os.getpid()) - time.process_time()) < 0.001


def test_a_thread_reading_is_its_run_time() -> None:
    """proc_threads gives a named thread's run time (schedstat), as the thread's own clock."""
    own: list[float] = []
    spun, done = threading.Event(), threading.Event()

    def work() -> None:
        """Spin, report the thread's own CPU clock, then wait to be read."""
        name_this_thread("p1-clock-test")
        _spin(0.027)
        own.append(time.thread_time())
        spun.set()
        done.wait(10)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        assert spun.wait(10)
        use = proc_threads(os.getpid())["p1-clock-test"]
    finally:
        done.set()
        thread.join(10)
    assert own and abs(use.cpu_s - own[0]) < 0.001
