"""The config file watcher notices edits, replacements and deletions."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.daemon.watch import FileWatcher


def test_watcher_sees_edit_replace_and_delete(tmp_path: Path) -> None:
    """An in-place edit, a rename-over replacement and a deletion all count as changes."""
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("x = 1\n")
    b.write_text("y = 1\n")
    watcher = FileWatcher.of([a, b])
    assert watcher.changed() == []
    a.write_text("x = 22\n")
    assert watcher.changed() == [a]
    watcher.rebase([a, b])
    tmp = tmp_path / "b.new"
    tmp.write_text("y = 1\n")
    os.replace(tmp, b)
    assert watcher.changed() == [b]
    watcher.rebase([a, b])
    a.unlink()
    assert watcher.changed() == [a]
