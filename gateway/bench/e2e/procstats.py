"""What a process uses, read from outside: CPU (all threads, per thread name), memory, wake-ups.

For `bench e2e`, which reads each side's process around every measured window.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, for clock_getcpuclockid (Python wraps only the per-thread one)."""
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process (all its threads, ended ones too): its CPU-time clock, to the
    nanosecond; /proc/PID/stat's user + system ticks (10 ms each) where there is none."""
    libc = _libc()
    clock = ctypes.c_int()
    if libc is not None and libc.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        with contextlib.suppress(OSError):
            return time.clock_gettime(clock.value)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _task_cpu_s(task: Path, stat_fields: list[str]) -> float:
    """A thread's CPU seconds: schedstat's run time in ns, else its stat ticks."""
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return (int(stat_fields[11]) + int(stat_fields[12])) / CLK_TCK


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (MiB), from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


@dataclass(frozen=True, slots=True)
class ThreadUse:
    """One kernel thread name's CPU seconds and context switches (all threads of that name)."""

    cpu_s: float
    switches: int
    """Voluntary + involuntary context switches: about how often the threads woke."""


def proc_threads(pid: int) -> dict[str, ThreadUse]:
    """Per kernel thread name (comm), CPU and context switches of a process's threads."""
    out: dict[str, ThreadUse] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        cpu = _task_cpu_s(task, fields)
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
        old = out.get(comm, ThreadUse(0.0, 0))
        out[comm] = ThreadUse(old.cpu_s + cpu, old.switches + switches)
    return out


def thread_delta(before: dict[str, ThreadUse], after: dict[str, ThreadUse]) -> dict[str, ThreadUse]:
    """What each thread name used between two `proc_threads` readings."""
    zero = ThreadUse(0.0, 0)
    return {
        name: ThreadUse(
            use.cpu_s - before.get(name, zero).cpu_s, use.switches - before.get(name, zero).switches
        )
        for name, use in after.items()
    }


def thread_cpu_s(name_prefix: str) -> float:
    """CPU seconds of this process's threads whose name starts with `name_prefix`."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith(name_prefix) and thread.ident is not None:
            with contextlib.suppress(OSError, ProcessLookupError):
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total
