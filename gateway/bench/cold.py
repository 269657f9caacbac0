"""`p1-gateway bench cold`: what the same work costs right after its thread slept.

At rig load the daemon handles one telegram every 30 ms or so (32 meters, one telegram a second
each) and sleeps in between. On the development VMs the CPU time of a telegram at rig load is
several times what the same code takes in a flood (`bench e2e`), though it executes about as
many instructions (`python -m gateway.bench.callgrind`). This benchmark isolates why: it runs a
fixed piece of work, in one thread, over and over, each time after sleeping a given gap, and
reads the thread's own CPU clock around the work alone (the sleep is not in it). The work is:

- `p1 core`: one rig telegram framed (in 115-byte pieces, as a line delivers it), decoded and
  turned into its MQTT payload (body and envelope): the sans-IO part of the daemon's path;
- `sum(range(2000))`: a reference with no code of ours, the loop the docs' per-VM
  `timeit` figure times;
- `sha256, 1 kB`: a reference that runs C code only (hashlib), no interpreter loop.

Each cell (work x gap) takes `--samples` readings per round; the cells' order rotates from
round to round; the figure is the median over all of a cell's readings, and the ratio compares
it with the same work back to back (gap 0). Nothing here opens a port or a socket.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Gaps between two runs of the work, in ms, by default: back to back, then up to rig load's.
DEFAULT_GAPS_MS = (0.0, 1.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class Work:
    """One piece of work to time: its label and a call that does it once (returns a size)."""

    label: str
    run: Callable[[], int]


@dataclass(frozen=True, slots=True)
class ColdRow:
    """One work's medians, in µs of thread CPU, per gap (ms), and each gap's ratio to gap 0."""

    label: str
    median_us: dict[float, float]

    def ratio(self, gap_ms: float) -> float:
        """How many times the back-to-back cost the work took after `gap_ms` of sleep."""
        return self.median_us[gap_ms] / self.median_us[0.0]


def p1_core_work() -> Work:
    """The sans-IO path of a rig telegram: frame it in pieces, decode it, build its payload."""
    from gateway.bench.callgrind import CHUNK, rig_framers, rig_telegrams
    from gateway.p1 import Frame, decode_telegram
    from gateway.publish import payload as pl

    feed = rig_telegrams()
    framers = rig_framers()
    count = itertools.count()

    def run() -> int:
        """Frame, decode and encode the next rig telegram; the payload's size in bytes."""
        index = next(count)
        variant, spec, raw = feed[index % len(feed)]
        framer = framers[variant]
        size = 0
        for start in range(0, len(raw), CHUNK):
            for event in framer.feed(raw[start : start + CHUNK]):
                if isinstance(event, Frame):
                    telegram = decode_telegram(event.raw, spec, crc_verified=True)  # framer checked
                    body = pl.telegram_body(telegram)
                    size += len(pl.envelope("rig-a", variant, index, 0, body))
        return size

    return Work("p1 core: frame, decode, payload", run)


def reference_works() -> list[Work]:
    """Work with no code of ours: an interpreter loop and a C-only hash."""
    block = bytes(range(256)) * 4

    def summed() -> int:
        """The per-VM timeit loop."""
        return sum(range(2000))

    def hashed() -> int:
        """C code only."""
        return len(hashlib.sha256(block).digest())

    return [Work("sum(range(2000))", summed), Work("sha256, 1 kB", hashed)]


def sample(work: Work, gap_ms: float, samples: int) -> list[int]:
    """`samples` readings of the work's thread CPU time (ns), each after sleeping `gap_ms`."""
    readings = []
    run, gap_s, clock = work.run, gap_ms / 1000, time.thread_time_ns
    run()  # the first call of a cell is not read: back to back it would be the cold one
    for _ in range(samples):
        if gap_s:
            time.sleep(gap_s)
        start = clock()
        run()
        readings.append(clock() - start)
    return readings


def measure(
    works: Sequence[Work], gaps_ms: Sequence[float], samples: int, rounds: int
) -> list[ColdRow]:
    """Every cell once a round, its order rotated from round to round; medians per cell."""
    cells = [(work, gap) for work in works for gap in gaps_ms]
    readings: dict[tuple[str, float], list[int]] = {(w.label, g): [] for w, g in cells}
    for index in range(rounds):
        shift = index % len(cells)
        for work, gap in cells[shift:] + cells[:shift]:
            readings[(work.label, gap)].extend(sample(work, gap, samples))
    return summarize([w.label for w in works], gaps_ms, readings)


def summarize(
    labels: Sequence[str], gaps_ms: Sequence[float], readings: dict[tuple[str, float], list[int]]
) -> list[ColdRow]:
    """One row per work: the median of each cell's readings, in µs."""
    return [
        ColdRow(label, {gap: statistics.median(readings[(label, gap)]) / 1000 for gap in gaps_ms})
        for label in labels
    ]


def parse_gaps(text: str) -> tuple[float, ...]:
    """`0,1,10,30` -> the gaps in ms; gap 0 (the baseline of the ratios) is always included."""
    try:
        gaps = {float(part) for part in text.split(",") if part.strip()}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"gaps are ms separated by commas: {text!r}") from exc
    if any(gap < 0 for gap in gaps):
        raise argparse.ArgumentTypeError(f"a gap cannot be negative: {text!r}")
    return tuple(sorted(gaps | {0.0}))


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `bench cold`."""
    parser.add_argument(
        "--gaps",
        type=parse_gaps,
        default=DEFAULT_GAPS_MS,
        help="sleeps before each run of the work, ms, comma-separated (default 0,1,10,30)",
    )
    parser.add_argument(
        "--samples", type=int, default=100, help="readings per cell and round (default 100)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds, order rotated (default 3)")


def table(rows: Sequence[ColdRow], gaps_ms: Sequence[float]) -> list[str]:
    """The figures as lines: µs per gap, then each gap's ratio to back to back."""
    head = "".join(f"{_gap_label(gap):>16}" for gap in gaps_ms)
    lines = [f"{'work':<34}{head}"]
    for row in rows:
        cells = "".join(f"{row.median_us[gap]:>9.1f} {row.ratio(gap):>5.1f}x" for gap in gaps_ms)
        lines.append(f"{row.label:<34}{cells}")
    return lines


def _gap_label(gap_ms: float) -> str:
    """A column heading: the gap before each run."""
    return f"after {gap_ms:g} ms"


def main(args: argparse.Namespace) -> int:
    """Run `bench cold` and print the figures."""
    samples, rounds = max(1, args.samples), max(1, args.rounds)
    gaps = tuple(args.gaps)
    print(
        f"bench cold: thread CPU of the same work after sleeping each gap; {samples} readings "
        f"x {rounds} rounds per cell, cells rotated; median us and ratio to back to back; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    rows = measure([p1_core_work(), *reference_works()], gaps, samples, rounds)
    for line in table(rows, gaps):
        print(line)
    return 0
