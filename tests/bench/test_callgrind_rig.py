"""`python -m gateway.bench.callgrind --rig`: the daemon itself under callgrind at rig load.

No count and no duration is asserted (they depend on the code and the machine); what is
asserted is that the gateway really ran under valgrind, that counting was switched on for the
measured window, and that the telegrams it counted over were written and received.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not here")


def test_the_daemon_is_counted_over_the_rig_window_only() -> None:
    """Two ports, 4 s counted: instructions per telegram of the daemon, every telegram through."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "gateway.bench.callgrind", "--rig"),
            *("--rig-ports", "2", "--rig-settle", "4", "--rig-seconds", "4"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    found = re.search(
        r"counted ([\d.]+) s: (\d+) telegrams written, (\d+) received; ([\d,]+) instructions, "
        r"([\d,]+) per telegram",
        proc.stdout,
    )
    assert found, proc.stdout
    written, received = int(found[2]), int(found[3])
    instructions, per = int(found[4].replace(",", "")), int(found[5].replace(",", ""))
    assert written > 0 and received >= written - 2  # telegrams went through; a few in flight
    assert instructions > 0
    assert per == round(instructions / written)
