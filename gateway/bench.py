"""`p1-gateway bench`: the project's benchmarks, one sub-command each.

`bench decode` times our decoder (CRC included) against dsmr_parser's TelegramParser on the
corpus telegrams whose CRC holds, in one run, alternating which goes first in each round so a
noisy machine weighs on both alike; it prints microseconds per telegram and the ratio.

Another benchmark is one row in BENCHMARKS: a module exposing `configure(parser)` and
`main(args) -> int` (as gateway.cli's commands do); a missing module just hides its row.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# name -> (module, configure attribute, main attribute, one-line help)
BENCHMARKS: dict[str, tuple[str, str, str, str]] = {
    "decode": (
        "gateway.bench",
        "configure_decode",
        "main_decode",
        "decode speed (CRC included) against dsmr_parser's TelegramParser",
    ),
    "e2e": ("gateway.bench_e2e", "configure", "main", "end to end: pseudo-terminal to MQTT"),
}

#: The telegram reported on its own: a real Fluvius (Sagemcom T211) with gas, water, peaks.
FLUVIUS_TELEGRAM = "ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT.txt"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare one sub-command per available benchmark."""
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, configure_attr, main_attr, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue  # a benchmark whose module is not part of this build
        command = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, configure_attr)(command)
        command.set_defaults(_bench_main=getattr(module, main_attr))


def main(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return int(args._bench_main(args))


# --- bench decode ---------------------------------------------------------------------------


def configure_decode(parser: argparse.ArgumentParser) -> None:
    """Arguments of `bench decode`."""
    parser.add_argument(
        "--rounds", type=int, default=15, help="alternating rounds (default 15); the median counts"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=20,
        help="decodes of each telegram per round by our decoder (default 20; dsmr_parser: 1)",
    )
    parser.add_argument(
        "--telegram",
        default=FLUVIUS_TELEGRAM,
        help=f"corpus file also reported on its own (default {FLUVIUS_TELEGRAM})",
    )


@dataclass(frozen=True, slots=True)
class BenchTelegram:
    """One telegram of the benchmark: its corpus file, bytes, text and detected spec."""

    name: str
    raw: bytes
    text: str
    spec: str


def corpus_telegrams() -> list[BenchTelegram]:
    """The frames of the corpus files whose CRC holds, each framed and CRC-checked."""
    from gateway import corpus
    from gateway.p1 import Frame, Framer, detect_spec

    telegrams = []
    for entry in corpus.with_crc(corpus.CrcStatus.VALID):
        for event in Framer().feed(entry.read()):
            if isinstance(event, Frame) and event.crc_ok:
                raw = event.raw
                telegrams.append(
                    BenchTelegram(entry.name, raw, raw.decode("latin-1"), detect_spec(raw))
                )
    return telegrams


def dsmr_parsers(specs: set[str]) -> dict[str, Any]:
    """One dsmr_parser TelegramParser per spec, built once (its regexes compiled once).

    Specs flagged for DLMS encryption (SAGEMCOM_T210_D_R, MSN) get a copy with the flag off:
    the corpus holds their plain text, which is what our decoder reads too.
    """
    from dsmr_parser.parsers import TelegramParser

    from gateway.p1.specs import spec_definition

    parsers = {}
    for spec in specs:
        definition = dict(spec_definition(spec))
        definition["general_global_cipher"] = False
        parsers[spec] = TelegramParser(definition)
    return parsers


@dataclass(frozen=True, slots=True)
class DecodeFigures:
    """Median microseconds per telegram over the rounds, ours and dsmr_parser's."""

    ours_us: float
    dsmr_us: float
    cold_us: float

    @property
    def ratio(self) -> float:
        """How many times faster ours is (warm)."""
        return self.dsmr_us / self.ours_us

    @property
    def cold_ratio(self) -> float:
        """How many times faster ours is with its caches emptied before every decode."""
        return self.dsmr_us / self.cold_us


def measure(
    telegrams: Sequence[BenchTelegram], parsers: dict[str, Any], rounds: int, repeat: int
) -> DecodeFigures:
    """Time both decoders over the telegrams, alternating which goes first in each round."""
    from gateway.p1 import decode
    from gateway.p1.decoder import clear_caches

    def run_ours() -> None:
        for telegram in telegrams:
            for _ in range(repeat):
                decode(telegram.raw)

    def run_dsmr() -> None:
        for telegram in telegrams:
            parsers[telegram.spec].parse(telegram.text)

    def run_cold() -> int:
        spent = 0
        for telegram in telegrams:
            clear_caches()
            start = time.perf_counter_ns()
            decode(telegram.raw)
            spent += time.perf_counter_ns() - start
        return spent

    def timed(run: Callable[[], object]) -> int:
        start = time.perf_counter_ns()
        run()
        return time.perf_counter_ns() - start

    count = len(telegrams)
    ours, dsmr, cold = [], [], []
    run_ours()  # warm-up: plans made, caches filled, code paths hot
    run_dsmr()
    for index in range(max(rounds, 1)):
        order = ("ours", "dsmr", "cold") if index % 2 == 0 else ("cold", "dsmr", "ours")
        for which in order:
            if which == "ours":
                ours.append(timed(run_ours) / (count * repeat) / 1000)
            elif which == "dsmr":
                dsmr.append(timed(run_dsmr) / count / 1000)
            else:
                cold.append(run_cold() / count / 1000)
    clear_caches()
    return DecodeFigures(statistics.median(ours), statistics.median(dsmr), statistics.median(cold))


def main_decode(args: argparse.Namespace) -> int:
    """Run `bench decode` and print the figures."""
    import platform

    import dsmr_parser  # noqa: F401  (fails early if it is missing)

    logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)  # its per-line error logs
    telegrams = corpus_telegrams()
    single = [t for t in telegrams if t.name == args.telegram or t.name == args.telegram + ".txt"]
    if not single:
        print(f"bench decode: no CRC-valid corpus telegram named {args.telegram!r}")
        return 2
    parsers = dsmr_parsers({t.spec for t in telegrams})
    gc.collect()
    rounds, repeat = max(args.rounds, 1), max(args.repeat, 1)
    print(
        f"bench decode: {len(telegrams)} corpus telegrams with a valid CRC, {rounds} rounds "
        f"alternating order, median per telegram; Python {platform.python_version()}"
    )
    print(_row("telegrams", "ours us", "dsmr_parser us", "ratio"))
    rows = (("corpus, all", telegrams), (single[0].name.removesuffix(".txt"), single))
    results = []
    for label, chosen in rows:
        figures = measure(chosen, parsers, rounds, repeat)
        results.append((label, figures))
        print(
            _row(label, f"{figures.ours_us:.2f}", f"{figures.dsmr_us:.1f}", f"{figures.ratio:.1f}x")
        )
    print("ours with every cache emptied before each decode (each line decoded anew):")
    for label, figures in results:
        cold = (f"{figures.cold_us:.2f}", f"{figures.dsmr_us:.1f}", f"{figures.cold_ratio:.1f}x")
        print(_row(label, *cold))
    return 0


def _row(label: str, ours: str, dsmr: str, ratio: str) -> str:
    """One line of the figures table."""
    return f"{label:<46} {ours:>9} {dsmr:>15} {ratio:>8}"
