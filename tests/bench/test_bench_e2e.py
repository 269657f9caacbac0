"""`p1-gateway bench e2e` end to end, with tiny numbers: it runs, prints figures and ratios.

No speed is asserted (the figures depend on the machine); what is asserted is behaviour: both
sides ran every phase, every telegram the simulators sent arrived (no `problem:` line, no
unmatched latency sample), and the table, ratios and target verdicts are printed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

NUMBER = r"-?\d+(?:\.\d+)?"
ROWS = [
    "rig load: latency p50, ms",
    "rig load: latency p99, ms",
    "rig load: CPU, % of one core",
    "load: CPU us per telegram",
    "flood: telegrams/s into mosquitto",
    "flood: telegrams/s out to the subscriber",
    "RSS at rig load (VmRSS), MB",
    "peak RSS over the run (VmHWM), MB",
]


def test_bench_e2e_prints_figures_and_ratios_for_both_sides(tmp_path: Path) -> None:
    """A short run with the baseline: every row has both figures and a ratio; nothing lost."""
    figures = tmp_path / "e2e.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "bench",
            "e2e",
            "--ports",
            "2",
            "--rounds",
            "1",
            "--rig-seconds",
            "3",
            "--load-rate",
            "20",
            "--load-seconds",
            "2",
            "--flood-seconds",
            "4",
            "--settle",
            "1",
            "--idle-seconds",
            "2",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "problem:" not in out, out
    for label in ROWS:
        match = re.search(
            rf"^{re.escape(label)}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})x$", out, re.M
        )
        assert match, f"row {label!r} missing or incomplete:\n{out}"
    assert re.search(
        r"^rig latency samples: gateway [1-9]\d* \(0 unmatched\), baseline [1-9]", out, re.M
    )
    assert "targets (gateway):" in out
    verdicts = re.findall(r"^  .+ (met \(|MISSED \(|not measured)", out, re.M)
    assert len(verdicts) == 6, out
    data = json.loads(figures.read_text())
    phases = {(p["side"], p["kind"]) for p in data["phases"]}
    assert phases == {(s, k) for s in ("ours", "baseline") for k in ("rig", "load", "flood")}
    for phase in data["phases"]:
        assert phase["out_per_s"] > 0
        if phase["kind"] != "flood":
            assert phase["latency_samples"] > 0 and phase["unmatched"] == 0


def test_bench_e2e_without_baseline_prints_the_gateway_alone(tmp_path: Path) -> None:
    """--skip-baseline: the gateway's figures, a '-' for the baseline and its ratios."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "bench",
            "e2e",
            "--ports",
            "1",
            "--rounds",
            "1",
            "--rig-seconds",
            "2",
            "--load-rate",
            "0",
            "--skip-flood",
            "--skip-baseline",
            "--settle",
            "1",
            "--idle-seconds",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "problem:" not in out, out
    assert re.search(rf"^rig load: latency p99, ms\s+{NUMBER}\s+-\s+-$", out, re.M), out
    assert "flood: telegrams/s into mosquitto" not in out
    assert re.search(r"flood into mosquitto >= 3000 telegrams/s\s+not measured", out)
