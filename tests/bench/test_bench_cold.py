"""`p1-gateway bench cold`: it times real work after each gap and prints medians and ratios.

No speed is asserted: what is asserted is that the work is the real path (a rig telegram comes
out as a payload), that every cell gets its readings with the order rotated, and that the
figures printed are the medians of those readings.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from gateway.bench import cold as bench_cold
from gateway.bench.cold import ColdRow, Work, measure, parse_gaps, summarize, table


def test_the_p1_core_work_turns_rig_telegrams_into_payloads() -> None:
    """Each run frames, decodes and encodes one rig telegram: its output is a whole payload."""
    work = bench_cold.p1_core_work()
    sizes = [work.run() for _ in range(40)]  # more than the 32 meters: every model once
    assert all(size > 200 for size in sizes), sizes


def test_the_envelope_of_the_p1_core_work_is_json_of_the_telegram() -> None:
    """The work builds what the daemon publishes: a JSON envelope with the telegram's values."""
    from gateway.bench.callgrind import rig_telegrams
    from gateway.p1 import Frame, Framer, decode_telegram
    from gateway.publish import payload as pl

    variant, spec, raw = rig_telegrams()[0]
    frame = next(e for e in Framer().feed(raw) if isinstance(e, Frame))
    body = pl.telegram_body(decode_telegram(frame.raw, spec, crc_verified=True))
    envelope = json.loads(pl.envelope("rig-a", variant, 0, 0, body))
    assert envelope["variant"] == variant
    assert bench_cold.p1_core_work().run() == len(pl.envelope("rig-a", variant, 0, 0, body))


def test_every_cell_gets_its_readings_in_a_rotated_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each (work, gap) cell is sampled once a round, the first cell moving on each round."""
    order: list[tuple[str, float]] = []

    def fake_sample(work: Work, gap: float, samples: int) -> list[int]:
        """Record the call; readings that name their cell."""
        order.append((work.label, gap))
        return [int(gap * 1000) + len(work.label)] * samples

    monkeypatch.setattr(bench_cold, "sample", fake_sample)
    works = [Work("a", lambda: 0), Work("bb", lambda: 0)]
    rows = measure(works, (0.0, 5.0), samples=3, rounds=3)
    cells = [("a", 0.0), ("a", 5.0), ("bb", 0.0), ("bb", 5.0)]
    assert order == cells + cells[1:] + cells[:1] + cells[2:] + cells[:2]
    assert rows == [
        ColdRow("a", {0.0: 0.001, 5.0: 5.001}),
        ColdRow("bb", {0.0: 0.002, 5.0: 5.002}),
    ]


def test_a_cell_reads_the_work_alone_once_per_sample() -> None:
    """`sample` runs the work once unread, then once per reading; the readings are CPU ns."""
    calls = []
    readings = bench_cold.sample(Work("w", lambda: calls.append(1) or 0), 0.0, samples=5)
    assert len(calls) == 6
    assert len(readings) == 5 and all(r >= 0 for r in readings)


def test_the_figures_are_medians_and_ratios_to_back_to_back() -> None:
    """Medians in µs per cell; the ratio divides by the gap-0 median."""
    readings = {("w", 0.0): [1000, 3000, 2000], ("w", 30.0): [9000, 10000, 50000]}
    (row,) = summarize(["w"], (0.0, 30.0), readings)
    assert row.median_us == {0.0: 2.0, 30.0: 10.0}
    assert row.ratio(30.0) == 5.0
    assert table([row], (0.0, 30.0))[1].split() == ["w", "2.0", "1.0x", "10.0", "5.0x"]


def test_gaps_parse_sorted_with_zero_and_refuse_nonsense() -> None:
    """`--gaps 30,1` -> (0, 1, 30); a word or a negative gap is an argument error."""
    assert parse_gaps("30,1") == (0.0, 1.0, 30.0)
    for bad in ("1,x", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_gaps(bad)


def test_bench_cold_runs_from_the_cli_and_prints_a_row_per_work() -> None:
    """`p1-gateway bench cold` with tiny numbers: three works, a median and ratio per gap."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "cold", "--gaps", "0,1", "--samples", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if re.search(r"\d\.\dx", line)]
    assert [row.split("  ")[0] for row in rows] == [
        "p1 core: frame, decode, payload",
        "sum(range(2000))",
        "sha256, 1 kB",
    ]
    assert all(len(re.findall(r"\d+\.\d+x", row)) == 2 for row in rows), rows
    assert all(row.count(" 1.0x") >= 1 for row in rows), rows
