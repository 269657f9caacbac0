"""The last valid schedule from the broker, kept on disk: a start without broker routes by it.

One file, `schedule.json` in the spool's folder, holding the payload exactly as the lab sent it.
It is replaced atomically: the new payload goes to a temporary file in the same folder, which is
flushed to the disk, renamed over the old one, and the folder flushed too; a power cut leaves
the old file or the new one, whole.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.errors import ScheduleStoreError

FILENAME = "schedule.json"


class ScheduleFile:
    """The kept schedule payload in `folder`; see the module docstring."""

    def __init__(self, folder: Path, filename: str = FILENAME):
        self.path = Path(folder) / filename

    def load(self) -> bytes | None:
        """The kept payload; None when there is none. ScheduleStoreError when unreadable."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ScheduleStoreError(f"cannot read {self.path}: {exc}") from exc

    def save(self, payload: bytes) -> None:
        """Replace the kept payload atomically. ScheduleStoreError when it cannot be written."""
        folder = self.path.parent
        tmp = folder / f".{self.path.name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ScheduleStoreError(f"cannot write {self.path}: {exc}") from exc
