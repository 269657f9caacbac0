"""Notice when configuration files change, by polling their stat signature (no inotify needed).

Editors replace files (write a temporary file, rename): the signature includes the inode, so a
replaced file counts as changed even when its size and mtime happen to match.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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

    def rebase(self, paths: Iterable[Path], taken: Mapping[Path, Signature] | None = None) -> None:
        """Make the files' state the new baseline: as `taken` (signatures read before the files
        were), else as they are now. A write that lands between reading a file and rebasing
        then still counts as a change, instead of being taken as already seen."""
        taken = taken or {}
        self._seen = {p: taken[p] if p in taken else file_signature(p) for p in paths}


def signatures(paths: Iterable[Path]) -> dict[Path, Signature]:
    """The present signatures of some files (take them before reading the files)."""
    return {p: file_signature(p) for p in paths}
