"""`p1-gateway bench decode`: our decoder (CRC included) against dsmr_parser's TelegramParser.

It times both on the corpus telegrams whose CRC holds, in one run, alternating which goes first
in each round so a noisy machine weighs on both alike; it prints microseconds per telegram and
the ratio.
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: The telegram reported on its own: a real Fluvius (Sagemcom T211) with gas, water, peaks.
FLUVIUS_TELEGRAM = "ndokter_dsmr_parser__TELEGRAM_FLUVIUS_V171_ALT.txt"


def configure(parser: argparse.ArgumentParser) -> None:
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
        "--live",
        type=int,
        default=3,
        help="fresh live-like variants of each telegram per round (default 3)",
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


_INSTANT_VALUE = re.compile(rb"(?m)^(\d-\d:\d+\.7\.0\()(\d+)\.(\d+)")
_METER_CLOCK = re.compile(rb"(?m)^(0-0:1\.0\.0\(\d{8})(\d\d)(\d\d)")


def live_variant(telegram: BenchTelegram, step: int) -> BenchTelegram:
    """The telegram as a meter might send it `step` seconds later: its clock advanced and every
    instantaneous value (power, voltage, current: C.7.0 codes) changed, CRC recomputed.

    A live stream repeats most lines (ids, registers, M-Bus readings) and changes these; the
    line memo of our decoder hits the first and decodes the second anew.
    """
    from gateway.p1 import crc_hex

    raw = telegram.raw
    bang = raw.rindex(b"!")
    body = raw[: bang + 1]

    def clock(match: re.Match[bytes]) -> bytes:
        minute, second = divmod(int(match.group(2)) * 60 + int(match.group(3)) + step, 60)
        return match.group(1) + b"%02d%02d" % (minute % 60, second)

    def instant(match: re.Match[bytes]) -> bytes:
        fraction = match.group(3)
        changed = (int(fraction) + 7919 * step) % 10 ** len(fraction)
        return match.group(1) + match.group(2) + b"." + b"%0*d" % (len(fraction), changed)

    body = _INSTANT_VALUE.sub(instant, _METER_CLOCK.sub(clock, body))
    tail = raw[bang + 1 :]
    if tail.strip():  # it carries a CRC: recompute it
        tail = crc_hex(body).encode("ascii") + b"\r\n"
    new = body + tail
    return BenchTelegram(telegram.name, new, new.decode("latin-1"), telegram.spec)


@dataclass(frozen=True, slots=True)
class Timing:
    """Median microseconds per telegram over the rounds, ours and dsmr_parser's."""

    ours_us: float
    dsmr_us: float

    @property
    def ratio(self) -> float:
        """How many times faster ours is."""
        return self.dsmr_us / self.ours_us


Runner = Callable[[int], tuple[int, int]]


def _median_rounds(rounds: int, runners: dict[str, Runner]) -> dict[str, float]:
    """Run every runner once per round, rotating which goes first; median us per telegram.

    A runner takes the round number and returns (nanoseconds spent, telegrams decoded).
    """
    results: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            spent, count = runners[name](index)
            results[name].append(spent / max(count, 1) / 1000)
    return {name: statistics.median(values) for name, values in results.items()}


def _timed(
    telegrams: Sequence[BenchTelegram],
    decode_one: Callable[[BenchTelegram], object],
    repeat: int = 1,
) -> tuple[int, int]:
    """Decode each telegram `repeat` times: (nanoseconds spent, telegrams decoded)."""
    start = time.perf_counter_ns()
    for telegram in telegrams:
        for _ in range(repeat):
            decode_one(telegram)
    return time.perf_counter_ns() - start, len(telegrams) * repeat


def measure_repeated(
    telegrams: Sequence[BenchTelegram], parsers: dict[str, Any], rounds: int, repeat: int
) -> tuple[Timing, Timing]:
    """The same telegrams over and over: (warm timing, timing with caches emptied each time)."""
    from gateway.p1 import decode
    from gateway.p1.decoder import clear_caches

    def ours(_: int) -> tuple[int, int]:
        return _timed(telegrams, lambda t: decode(t.raw), repeat)

    def dsmr(_: int) -> tuple[int, int]:
        return _timed(telegrams, lambda t: parsers[t.spec].parse(t.text))

    def cold(_: int) -> tuple[int, int]:
        spent = 0
        for telegram in telegrams:
            clear_caches()
            start = time.perf_counter_ns()
            decode(telegram.raw)
            spent += time.perf_counter_ns() - start
        return spent, len(telegrams)

    ours(0), dsmr(0)  # warm-up: plans made, caches filled, code paths hot
    medians = _median_rounds(rounds, {"ours": ours, "dsmr": dsmr, "cold": cold})
    clear_caches()
    return Timing(medians["ours"], medians["dsmr"]), Timing(medians["cold"], medians["dsmr"])


def measure_live(
    telegrams: Sequence[BenchTelegram], parsers: dict[str, Any], rounds: int, per_round: int
) -> Timing:
    """Each round, `per_round` fresh live variants of every telegram, decoded by both."""
    from gateway.p1 import decode

    variants = [
        [live_variant(t, 1 + index * per_round + k) for t in telegrams for k in range(per_round)]
        for index in range(rounds + 1)
    ]

    def ours(index: int) -> tuple[int, int]:
        return _timed(variants[index + 1], lambda t: decode(t.raw))

    def dsmr(index: int) -> tuple[int, int]:
        return _timed(variants[index + 1], lambda t: parsers[t.spec].parse(t.text))

    _timed(variants[0], lambda t: decode(t.raw))  # warm-up on variants not timed later
    medians = _median_rounds(rounds, {"ours": ours, "dsmr": dsmr})
    return Timing(medians["ours"], medians["dsmr"])


def main(args: argparse.Namespace) -> int:
    """Run `bench decode` and print the figures."""
    import platform

    from gateway.p1.decoder import clear_caches

    logging.getLogger("dsmr_parser").setLevel(logging.CRITICAL)  # its per-line error logs
    telegrams = corpus_telegrams()
    single = [t for t in telegrams if t.name in (args.telegram, args.telegram + ".txt")]
    if not single:
        print(f"bench decode: no CRC-valid corpus telegram named {args.telegram!r}")
        return 2
    parsers = dsmr_parsers({t.spec for t in telegrams})
    gc.collect()
    rounds, repeat = max(args.rounds, 1), max(args.repeat, 1)
    print(
        f"bench decode: {len(telegrams)} corpus telegrams with a valid CRC; {rounds} rounds, "
        f"order rotated each round, median us per telegram; Python {platform.python_version()}"
    )
    print(_row("telegrams", "ours us", "dsmr_parser us", "ratio"))
    label = single[0].name.removesuffix(".txt")
    corpus_warm, corpus_cold = measure_repeated(telegrams, parsers, rounds, repeat)
    print(_timing_row("corpus, all", corpus_warm))
    single_warm, single_cold = measure_repeated(single, parsers, rounds, repeat)
    print(_timing_row(label, single_warm))
    clear_caches()
    live = measure_live(telegrams, parsers, rounds, max(args.live, 1))
    print(_timing_row("corpus, live-like (clock, C.7.0 values move)", live))
    print("ours with every cache emptied before each decode (each line decoded anew):")
    print(_timing_row("corpus, all", corpus_cold))
    print(_timing_row(label, single_cold))
    clear_caches()
    return 0


def _timing_row(label: str, timing: Timing) -> str:
    """One figures row for a timing."""
    return _row(label, f"{timing.ours_us:.2f}", f"{timing.dsmr_us:.1f}", f"{timing.ratio:.1f}x")


def _row(label: str, ours: str, dsmr: str, ratio: str) -> str:
    """One line of the figures table."""
    return f"{label:<46} {ours:>9} {dsmr:>15} {ratio:>8}"
