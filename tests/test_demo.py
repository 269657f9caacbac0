"""The newcomer's demo shows decoded telegrams from the virtual rig through the real gateway."""

from __future__ import annotations

import subprocess
import sys

from gateway.sim.catalogue import DEFAULT_RIG


def test_demo_prints_decoded_telegrams_of_every_fast_meter() -> None:
    """Within its run, the demo prints telegrams of every 1-second meter, then stops cleanly."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--seconds", "12"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if " seq " in line]
    shown = {line.split()[0] for line in lines}
    fast = {m.id for m in DEFAULT_RIG if m.interval_s <= 1.0}
    assert fast <= shown, (fast - shown, out.stdout)
    assert "telegrams shown; stopping" in out.stdout
