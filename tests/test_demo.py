"""The newcomer's demo shows decoded telegrams from the virtual rig through the real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
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


def test_the_lab_demo_shows_a_booked_slot_start_and_stop_the_testers_telegrams() -> None:
    """`--lab`: rigs and tester added, both rigs booked; on each, the tester's session starts,
    telegrams received inside the slot follow, the session ends; the rigs applied version 2;
    everything is cleaned up."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.demo", "--lab", "--day-seconds", "4", "--seconds", "60"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("  booked 1 demo-rig-a ") for line in lines), out.stdout
    assert any(line.startswith("  booked 2 demo-rig-b ") for line in lines), out.stdout
    for rig in ("demo-rig-a", "demo-rig-b"):
        mine = [
            line.split(f"tester: {rig}: ", 1)[1] for line in lines if f"tester: {rig}: " in line
        ]
        starts = [i for i, line in enumerate(mine) if line.startswith("session start")]
        ends = [i for i, line in enumerate(mine) if line.startswith("session end")]
        seen = [i for i, line in enumerate(mine) if " seq " in line]
        assert len(starts) == len(ends) == 1 and seen, mine
        assert starts[0] < seen[0] and seen[-1] < ends[0], mine
        span = mine[starts[0]].split("slot ", 1)[1].split(" to ")
        first, last = (datetime.fromisoformat(t) for t in span)
        for i in seen:
            at = datetime.fromisoformat(mine[i].split(" received ", 1)[1].split()[0])
            assert first <= at < last, mine[i]
        listed = next(line for line in lines if line.startswith(f"  {rig} "))
        assert listed.split()[1:4] == ["2", "2", "2"], listed
    folder = next(line for line in lines if "working folder" in line).split()[-1]
    assert "cleaned up:" in lines[-1] and not Path(folder).exists()
