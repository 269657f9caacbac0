"""The status writer: the newest status, written by a thread of its own, never waited for."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from gateway.daemon.statuswriter import StatusWriter
from tests.support.mosquitto import wait_until
from tests.support.threads import returns


def test_the_newest_status_is_written(tmp_path: Path) -> None:
    """Each submitted status reaches the file; close writes the last one."""
    path = tmp_path / "run" / "status.json"
    writer = StatusWriter(path)
    writer.submit({"n": 1})
    assert wait_until(lambda: path.exists() and json.loads(path.read_text())["n"] == 1, 5)
    writer.submit({"n": 2})
    assert writer.close(timeout=5)
    assert json.loads(path.read_text()) == {"n": 2}


def test_a_hung_write_holds_up_nobody_and_shows_how_long(tmp_path: Path) -> None:
    """A write into a FIFO nobody reads hangs: submit returns at once, busy_for grows."""
    path = tmp_path / "status.json"
    fifo = tmp_path / f".{path.name}.{os.getpid()}.tmp"  # the writer's temporary file
    os.mkfifo(fifo)  # opening it for writing waits for a reader: a disk that hangs
    writer = StatusWriter(path)
    writer.submit({"n": 1})
    assert wait_until(lambda: writer.busy_for() > 0.2, 5)

    def submit_all() -> None:
        for n in range(100):
            writer.submit({"n": n})

    assert returns(submit_all)
    assert writer.busy_for() > 0.2  # the write was still hung while they were all taken
    assert not writer.close(timeout=0.2)  # still hung: close gives up in time
    reader = threading.Thread(target=lambda: fifo.read_bytes())
    reader.start()  # the disk comes back
    reader.join(5)
    assert wait_until(lambda: writer.busy_for() == 0.0, 5)
