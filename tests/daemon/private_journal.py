"""Run a command with a journal socket of its own that nobody reads (journald stuck).

Used as `unshare --mount --propagation private -- python private_journal.py CMD...`: in the
new mount namespace a tmpfs goes over /run/systemd/journal (or the nearest folder above it
that exists), a datagram socket is bound at /run/systemd/journal/socket, and CMD is executed
with that socket open and never read. Nothing outside the namespace sees any of it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

JOURNAL_DIR = "/run/systemd/journal"


def main(argv: list[str]) -> None:
    """Mount, bind, exec."""
    target = next(p for p in (JOURNAL_DIR, "/run/systemd", "/run") if os.path.isdir(p))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", target], check=True)
    os.makedirs(JOURNAL_DIR, exist_ok=True)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(f"{JOURNAL_DIR}/socket")
    os.set_inheritable(journal.fileno(), True)  # held open by CMD, and never read
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
