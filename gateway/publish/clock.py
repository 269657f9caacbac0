"""Clock trust, the IO side: is the system wall clock synchronised? (the router decides what to do)

Two sources, either is enough: systemd-timesyncd's flag file
`/run/systemd/timesync/synchronized` (exists once synced), and the kernel's own state from
adjtimex(2) (`TIME_ERROR` / `STA_UNSYNC` until an NTP daemon, timesyncd or chrony, clears it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from pathlib import Path

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    """struct timex up to `status`, then room to spare (the tail differs between ABIs)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


_adjtimex: Callable[[ctypes.Array[ctypes.c_char] | object], int] | None = None


def _load_adjtimex() -> Callable[..., int] | None:
    """libc's adjtimex, or None where there is none."""
    global _adjtimex
    if _adjtimex is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _adjtimex = libc.adjtimex
        except (OSError, AttributeError):
            return None
    return _adjtimex


def kernel_clock_synchronized() -> bool | None:
    """The kernel's NTP state via adjtimex(2) (read-only): True synced, False not, None unknown."""
    fn = _load_adjtimex()
    if fn is None:
        return None
    tx = _Timex()  # modes = 0: read only
    state = fn(ctypes.byref(tx))
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


def timesyncd_clock_synchronized(flag: Path = TIMESYNC_FLAG) -> bool:
    """True when systemd-timesyncd's flag file exists."""
    return os.path.exists(flag)


class SystemClockProbe:
    """Callable answering "is the wall clock synchronised?", cached for `cache_s` seconds."""

    def __init__(
        self,
        flag: Path = TIMESYNC_FLAG,
        *,
        use_kernel: bool = True,
        cache_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._flag = flag
        self._use_kernel = use_kernel
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._checked_at: float | None = None
        self._value = False

    def check(self) -> bool:
        """Ask the system now, bypassing the cache."""
        if timesyncd_clock_synchronized(self._flag):
            return True
        return bool(self._use_kernel and kernel_clock_synchronized())

    def __call__(self) -> bool:
        """The (cached) answer."""
        now = self._monotonic()
        if self._checked_at is None or now - self._checked_at >= self._cache_s:
            self._value = self.check()
            self._checked_at = now
        return self._value
