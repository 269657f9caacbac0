"""Turning a call that would hang into a test failure, without timing how fast it is."""

from __future__ import annotations

import threading
from collections.abc import Callable


def returns(call: Callable[[], object], limit: float = 30.0) -> bool:
    """Whether `call` returns at all (within a generous `limit` s): a call that blocks on
    something that never comes would hang the test instead of failing it."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive()
