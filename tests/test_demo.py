"""The newcomer's demo shows decoded telegrams from the virtual rig through the real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.demo import PASSWORDS, TESTER
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
    assert f"tester login: user {TESTER}, password {PASSWORDS[TESTER]}" in out.stdout
    status_line = next(line for line in out.stdout.splitlines() if "status table" in line)
    command = status_line.split("any time: ", 1)[1].split()[0]
    assert Path(command).is_absolute() and os.access(command, os.X_OK), status_line
    folder = next(line for line in out.stdout.splitlines() if "working folder" in line).split()[-1]
    cleaned = next(line for line in out.stdout.splitlines() if "cleaned up:" in line)
    assert "gateway, virtual rig and broker stopped" in cleaned and folder in cleaned
    assert not Path(folder).exists()


def test_demo_rival_receives_nothing_of_the_slot() -> None:
    """With --rival, a second tester subscribed to p1/# gets public state and no slot message."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--seconds", "8", "--rival"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    verdict = next(line for line in out.stdout.splitlines() if "the rival received" in line)
    assert "none of the slot's" in verdict, verdict
    assert int(verdict.split("received ")[1].split()[0]) > 0  # it did receive the public state
