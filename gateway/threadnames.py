"""Native thread names, so `top -H`, `ps -L` and /proc show which of the gateway's threads works.

CPython 3.11 names its threads only for itself; the kernel sees every one as the process's
name. `name_this_thread` sets the kernel's name (prctl PR_SET_NAME, at most 15 bytes) for the
calling thread. Best effort: where libc or prctl is missing, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

_PR_SET_NAME = 15
_MAX_BYTES = 15


@functools.cache
def _prctl() -> Any:
    """libc's prctl, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (truncated to 15 bytes) as the kernel shows it."""
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("ascii", "replace")[:_MAX_BYTES]), 0, 0, 0)
