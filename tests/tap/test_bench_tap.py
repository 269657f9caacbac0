"""`p1-gateway bench tap`: it runs the tap and the floor at a small load and reports both.

No speed is asserted: that each side measured telegrams, and how the figures are computed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.bench.tap import Share, rig_telegrams, variant_ids


def test_the_figures_are_percentiles_of_the_samples_in_ms() -> None:
    """p50, p99 and max come from the sorted samples (ns), in ms; CPU as % of the window."""
    share = Share("tap", samples=[i * 1000 for i in range(1, 101)], cpu_s=0.5, window_s=10.0)
    figures = share.figures()
    assert figures["telegrams"] == 100
    assert figures["p50_ms"] == 0.051 and figures["p99_ms"] == 0.1 and figures["max_ms"] == 0.1
    assert figures["cpu_percent"] == 5.0


def test_the_driver_publishes_real_telegrams_one_per_variant() -> None:
    """The rig's telegrams are real corpus frames, one per variant."""
    raws = rig_telegrams(3)
    assert len(raws) == 3 and all(r.startswith(b"/") and r.endswith(b"\r\n") for r in raws)
    assert variant_ids(3) == ["m00", "m01", "m02"]


def test_bench_tap_measures_the_tap_and_the_floor(tmp_path: Path) -> None:
    """A short run over TCP and ptys measures both sides and writes the JSON."""
    out = tmp_path / "tap.json"
    command = [
        sys.executable, "-m", "gateway", "bench", "tap", "--ports", "2", "--rate", "4",
        "--seconds", "1", "--settle", "0.25", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {row["label"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"tap", "floor"}
    assert all(row["telegrams"] >= 2 for row in rows.values()), rows
    assert "p99 ms" in done.stdout
