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

import pytest

from gateway.bench.e2e.report import PhaseResult, report, summarize

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


def _bench_e2e(options: str, *more: str) -> str:
    """Run `python -m gateway bench e2e OPTIONS MORE`; its output, once it ended well and lost
    nothing (OPTIONS: a string of words, MORE: whole arguments)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "e2e", *options.split(), *more],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "problem:" not in out, out
    return out


def test_bench_e2e_prints_figures_and_ratios_for_both_sides(tmp_path: Path) -> None:
    """A short run with the baseline: every row has both figures and a ratio; nothing lost."""
    figures = tmp_path / "e2e.json"
    out = _bench_e2e(
        "--ports 2 --rounds 1 --rig-seconds 3 --load-rate 20 --load-seconds 2 --flood-seconds 4"
        " --settle 1 --idle-seconds 2",
        "--json",
        str(figures),
    )
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
    out = _bench_e2e(
        "--ports 1 --rounds 1 --rig-seconds 2 --load-rate 0 --skip-flood --skip-baseline"
        " --settle 1 --idle-seconds 0"
    )
    assert re.search(rf"^rig load: latency p99, ms\s+{NUMBER}\s+-\s+-$", out, re.M), out
    assert "flood: telegrams/s into mosquitto" not in out
    assert re.search(r"flood into mosquitto >= 3000 telegrams/s\s+not measured", out)


def _flood(side: str, into_per_s: float, per_telegram: int) -> PhaseResult:
    """A 10 s flood phase whose broker took `into_per_s` telegrams a second."""
    n = int(into_per_s * 10)
    return PhaseResult(
        side, "flood", 10.0, 8.0, 40.0, 50.0, n, n, 0, into_per_s * per_telegram, 1.0, 1.0
    )


def test_the_flood_ratio_is_taken_against_the_baselines_best_round() -> None:
    """A baseline that swings between rounds (17 and 658 telegrams/s here, as measured once) is
    compared at its best: 2,176 is 3.3x of that, a miss, not 6.4x of the median."""
    ours = summarize([_flood("ours", 2200.0, 2), _flood("ours", 2152.0, 2)], "ours", 2)
    base = summarize([_flood("baseline", 17.0, 1), _flood("baseline", 658.0, 1)], "baseline", 1)
    assert base.flood is not None and base.flood.best_into == 658.0
    assert base.flood.into == (17.0 + 658.0) / 2  # the median of two rounds
    lines = report(ours, base, [])
    assert re.search(
        r"^flood: the same, best round\s+2200\.0\s+658\.0\s+3\.3x$", "\n".join(lines), re.M
    )
    verdict = next(line for line in lines if "x the baseline's best round" in line)
    assert verdict.endswith("MISSED (3.31)"), verdict


def test_no_ratio_target_is_taken_against_a_floor() -> None:
    """With a floor as the other side the column is headed by it and the ratio target is not
    measured: a floor is a lower bound, not the field's way of doing it."""
    ours = summarize([_flood("ours", 2200.0, 2)], "ours", 2)
    floor = summarize([_flood("baseline", 100.0, 1)], "baseline", 1)
    lines = report(ours, floor, [], "floor")
    assert re.search(r"^\s+gateway\s+floor\s+ratio$", lines[0])
    verdict = next(line for line in lines if "x the baseline's best round" in line)
    assert verdict.endswith("not measured"), verdict
    field = report(ours, floor, [])
    assert next(line for line in field if "best round" in line and "x the" in line).endswith(
        "met (22.00)"
    )


@pytest.mark.parametrize("floor", ["floor", "floor-decode"])
def test_bench_e2e_runs_the_floor_as_the_other_side(floor: str) -> None:
    """A short run with the floor beside the gateway: every telegram received and matched,
    the column headed by the floor, and no ratio target taken against it."""
    out = _bench_e2e(
        f"--baseline {floor} --ports 2 --rounds 1 --rig-seconds 2 --load-rate 20"
        " --load-seconds 2 --skip-flood --settle 1 --idle-seconds 0"
    )
    assert re.search(rf"^\s+gateway\s+{floor}\s+ratio$", out, re.M), out
    for kind in ("rig", "load"):
        assert re.search(
            rf"^{kind} latency samples: gateway [1-9]\d* \(0 unmatched\), "
            rf"{floor} [1-9]\d* \(0 unmatched\)$",
            out,
            re.M,
        ), out
    assert re.search(r"flood >= 10x the baseline's best round\s+not measured", out), out
