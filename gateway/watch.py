"""Notice when configuration files change, by polling their stat signature (no inotify needed).

Editors replace files (write a temporary file, rename): the signature includes the inode, so a
replaced file counts as changed even when its size and mtime happen to match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[int, int, int, int] | None


def file_signature(path: Path) -> Signature:
    """(inode, size, mtime ns, ctime ns) of a file, or None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class FileWatcher:
    """Remembers the signatures of a set of files and says when any of them changed."""

    _seen: dict[Path, Signature]

    @classmethod
    def of(cls, paths: Iterable[Path]) -> FileWatcher:
        """A watcher that takes the files' present state as the baseline."""
        return cls({p: file_signature(p) for p in paths})

    def changed(self) -> list[Path]:
        """The files whose signature differs from the baseline (the baseline is not moved)."""
        return [p for p, sig in self._seen.items() if file_signature(p) != sig]

    def rebase(self, paths: Iterable[Path]) -> None:
        """Take the files' present state as the new baseline (after a reload attempt)."""
        self._seen = {p: file_signature(p) for p in paths}
