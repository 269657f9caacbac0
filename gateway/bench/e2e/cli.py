"""`p1-gateway bench e2e`: its options, and `main`, which runs the bench and prints the figures."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from gateway.bench.e2e.report import phase_dict, plain, report, summarize
from gateway.bench.e2e.run import BASELINES, Bench


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `bench e2e`."""
    add = parser.add_argument
    add("--ports", type=int, default=32, help="pseudo-terminals per side (default 32)")
    add("--rounds", type=int, default=2, help="rounds of phases, order rotated (default 2)")
    add("--rig-rate", type=float, default=1.0, help="rig load: telegrams/s per port (default 1)")
    add("--rig-seconds", type=float, default=20.0, help="rig-load window, s (default 20)")
    add(
        "--load-rate",
        type=float,
        default=800.0,
        help="load phase: telegrams/s in total for both sides (default 800; 0 skips it)",
    )
    add("--load-seconds", type=float, default=10.0, help="load window, s (default 10)")
    add(
        "--flood-rate",
        type=float,
        default=0.0,
        help="flood: telegrams/s in total (default 0: as fast as the ptys take them)",
    )
    add("--flood-seconds", type=float, default=10.0, help="flood window, s (default 10)")
    add("--skip-flood", action="store_true", help="no flood phases")
    add("--settle", type=float, default=2.0, help="s before each measured window (default 2)")
    add(
        "--idle-seconds",
        type=float,
        default=5.0,
        help="idle CPU window before the rounds, all rigs paused (default 5; 0 skips it)",
    )
    add("--skip-baseline", action="store_true", help="measure the gateway only")
    add(
        "--baseline",
        choices=tuple(BASELINES),
        default="field",
        help="the other side: field (dsmr_parser, paho: the way the field does it; default), "
        "floor (the least a Python bridge does a telegram: gateway.bench.floor) or "
        "floor-decode (the floor, decoding with the gateway's decoder and encoder)",
    )
    add("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    add("--keep", action="store_true", help="keep the working folder (configs, logs)")


@contextlib.contextmanager
def _bench(args: argparse.Namespace) -> Iterator[Bench]:
    """A started bench, closed whatever happens."""
    bench = Bench(args)
    try:
        bench.start()
        yield bench
    finally:
        bench.close()


def main(args: argparse.Namespace) -> int:
    """Run `bench e2e` and print the figures."""
    from gateway.devkit.mosquitto import MOSQUITTO

    if not Path(MOSQUITTO).exists():
        print(f"bench e2e: mosquitto not found ({MOSQUITTO})")
        return 2
    if args.ports < 1 or args.rig_rate <= 0:
        print("bench e2e: --ports and --rig-rate must be positive")
        return 2
    if args.skip_flood:
        flood = "skipped"
    elif args.flood_rate > 0:
        flood = f"{args.flood_rate:g} telegrams/s in total, unpaced, {args.flood_seconds:g} s"
    else:
        flood = f"unpaced, as fast as the ptys take bytes, {args.flood_seconds:g} s"
    load = (
        "skipped"
        if args.load_rate <= 0
        else f"{args.load_rate:g} telegrams/s in total, unpaced, {args.load_seconds:g} s"
    )
    print(
        f"bench e2e: {args.ports} ptys, {max(1, args.rounds)} rounds (order rotated); "
        f"rig load {args.rig_rate:g} telegram/s per port at line rate, {args.rig_seconds:g} s; "
        f"load {load}; flood {flood}; "
        f"baseline {'skipped' if args.skip_baseline else args.baseline}; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    with _bench(args) as bench:
        if args.keep:
            print(f"  working folder (kept): {bench.dir}", flush=True)
        bench.run()
        for name, count in bench.check_complete().items():
            if count:
                bench.problems.append(f"{name}: {count} telegrams sent never arrived")
        idle = bench.idle_percent
        ours = summarize(bench.results, "ours", 2, idle.get("ours"))
        base = (
            None
            if args.skip_baseline
            else summarize(bench.results, "baseline", 1, idle.get("baseline"))
        )
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                        "gateway": plain(ours),
                        "baseline": None if base is None else plain(base),
                        "phases": [phase_dict(r) for r in bench.results],
                        "problems": bench.problems,
                    },
                    indent=2,
                )
            )
    for line in report(ours, base, bench.problems, args.baseline):
        print(line)
    return 0
