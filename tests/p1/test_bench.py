"""`p1-gateway bench decode` runs and prints both timings and their ratio (no speed asserted)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_bench_decode_prints_microseconds_and_ratios() -> None:
    """A one-round bench prints a figures row for the corpus and for the Fluvius telegram."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "bench",
            "decode",
            "--rounds",
            "1",
            "--repeat",
            "1",
            "--live",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "dsmr_parser us" in out and "ratio" in out
    rows = re.findall(r"^(\S.*?)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)x$", out, re.MULTILINE)
    labels = [row[0].strip() for row in rows]
    assert labels.count("corpus, all") == 2  # warm, then with caches emptied
    assert labels.count("ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT") == 2
    assert any(label.startswith("corpus, live-like") for label in labels)
    for _, ours, dsmr, ratio in rows:
        assert float(ours) > 0 and float(dsmr) > 0
        assert abs(float(dsmr) / float(ours) - float(ratio)) < 0.1 * float(ratio) + 0.1


def test_bench_lists_its_benchmarks() -> None:
    """`p1-gateway bench --help` names the decode benchmark."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "decode" in out
