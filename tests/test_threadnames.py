"""The kernel sees the names the gateway gives its threads."""

from __future__ import annotations

import threading
from pathlib import Path

from gateway.threadnames import name_this_thread


def test_thread_name_shows_in_proc() -> None:
    """A named thread's /proc comm is the name, cut to 15 bytes."""
    seen: list[str] = []

    def body() -> None:
        name_this_thread("p1gw-a-rather-long-name")
        tid = threading.get_native_id()
        seen.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == ["p1gw-a-rather-l"]
