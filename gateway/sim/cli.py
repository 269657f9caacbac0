"""`p1-gateway simulate`: a virtual rig on pseudo-terminals, for technicians, tests and the demo.

    p1-gateway simulate --link-dir /tmp/rig --variants-out /tmp/rig/variants.toml

prints one line per meter (variant, spec, interval, line, port -> pty), then "ready", and runs
until Ctrl-C or SIGTERM. Faults come from flags (recurring) or from commands on stdin
(`--commands`, on by default when stdin is a terminal), one per line:

    unplug VARIANT [SECONDS]   (no SECONDS: until replug)
    replug VARIANT             silence VARIANT SECONDS
    badcrc VARIANT [COUNT]     truncate VARIANT [COUNT]
    noise VARIANT [BYTES] [garbage|unterminated]
    stats                      quit

VARIANT may be `all`. Each command is answered with one line starting "ok" or "error".
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from gateway.sim.catalogue import DEFAULT_RIG, MeterModel, catalogue, models_for
from gateway.sim.meter import NoiseKind, SimulatedMeter
from gateway.sim.rig import VirtualRig


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare simulate's arguments."""
    parser.add_argument(
        "--variant",
        "-V",
        action="append",
        metavar="ID",
        help="a meter model to simulate (repeatable; default: the whole default rig)",
    )
    parser.add_argument(
        "--count", type=int, help="this many meters, cycling through the models (ids get -NN)"
    )
    parser.add_argument("--list", action="store_true", help="list the meter models and exit")
    parser.add_argument(
        "--link-dir",
        type=Path,
        help="create DIR/<variant> symlinks to the ptys, re-pointed on every replug",
    )
    parser.add_argument(
        "--variants-out",
        metavar="FILE",
        help="write the gateway's [[variant]] TOML entries to FILE ('-': stdout)",
    )
    parser.add_argument(
        "--rate",
        help="telegrams per second per meter, or 'line' for back-to-back at line rate "
        "(default: each meter's real interval, 1 s or 10 s)",
    )
    parser.add_argument(
        "--no-pacing",
        action="store_true",
        help="write as fast as the ptys take bytes, not at the serial line's rate",
    )
    parser.add_argument("--duration", type=float, help="stop after SECONDS (default: never)")
    parser.add_argument(
        "--commands",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read fault commands from stdin (default: when stdin is a terminal)",
    )
    parser.add_argument(
        "--stats-every", type=float, default=0.0, metavar="S", help="print counters every S s"
    )
    faults = parser.add_argument_group("recurring faults (on --faulty meters, default all)")
    faults.add_argument(
        "--faulty", action="append", metavar="ID", help="a meter to afflict (repeatable)"
    )
    faults.add_argument(
        "--bad-crc-every",
        type=int,
        default=0,
        metavar="N",
        help="every Nth telegram carries a wrong CRC (0: never)",
    )
    faults.add_argument(
        "--truncate-every",
        type=int,
        default=0,
        metavar="N",
        help="every Nth telegram is cut off halfway, before its CRC line (0: never)",
    )
    faults.add_argument(
        "--noise-every",
        type=int,
        default=0,
        metavar="N",
        help="line noise goes out before every Nth telegram (0: never)",
    )
    faults.add_argument(
        "--noise-bytes",
        type=int,
        default=512,
        metavar="B",
        help="bytes of noise each time (default: %(default)s)",
    )
    faults.add_argument(
        "--silence-every",
        type=float,
        default=0.0,
        metavar="S",
        help="every S seconds the meter falls silent, its port still open (0: never)",
    )
    faults.add_argument(
        "--silence-for",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds each silence lasts (default: %(default)s)",
    )
    faults.add_argument(
        "--unplug-every",
        type=float,
        default=0.0,
        metavar="S",
        help="every S seconds the meter is unplugged: its pty closes (0: never)",
    )
    faults.add_argument(
        "--unplug-for",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds until each unplugged meter is plugged back in (default: %(default)s)",
    )


def select_models(variants: list[str] | None, count: int | None) -> list[MeterModel]:
    """The models named (or the default rig), replicated to `count` meters if asked."""
    known = catalogue()
    if variants:
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise ValueError(f"unknown meter model(s): {', '.join(unknown)} (see --list)")
        base = tuple(known[v] for v in variants)
    else:
        base = DEFAULT_RIG
    return models_for(count, base) if count else list(base)


def parse_rate(text: str | None) -> float | str | None:
    """--rate: None, 'line' or a positive number of telegrams per second."""
    if text is None or text == "line":
        return text
    rate = float(text)
    if rate <= 0:
        raise ValueError("--rate must be positive or 'line'")
    return rate


def main(args: argparse.Namespace) -> int:
    """Run the virtual rig until Ctrl-C, SIGTERM, `quit` or --duration."""
    if args.list:
        for model in DEFAULT_RIG:
            print(
                f"{model.id:24} {model.spec:18} {model.interval_s:>4g}s  {model.line:11} ", end=""
            )
            print(model.description)
        return 0
    try:
        models = select_models(args.variant, args.count)
        rate = parse_rate(args.rate)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    rig = VirtualRig(models, link_dir=args.link_dir, rate=rate, line_pacing=not args.no_pacing)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rig.start()
    try:
        faulty = [rig.meter(v) for v in args.faulty or rig.meters if v in rig.meters]
        for meter in faulty:
            meter.schedule(
                bad_crc_every=args.bad_crc_every,
                truncate_every=args.truncate_every,
                noise_every=args.noise_every,
                noise_bytes=args.noise_bytes,
            )
        for meter in rig.meters.values():
            model = meter.model
            where = f"{meter.port} -> {meter.pty}" if meter.link else str(meter.pty)
            print(f"{meter.variant:24} {model.spec:18} {model.interval_s:>4g}s  ", end="")
            print(f"{model.line:11} {where}")
        if args.variants_out:
            _write_variants(rig, args.variants_out)
        print(f"ready: {len(rig.meters)} meters (Ctrl-C to stop)", flush=True)
        commands = args.commands if args.commands is not None else sys.stdin.isatty()
        if commands:
            reader = threading.Thread(
                target=_read_commands, args=(rig, sys.stdin, sys.stdout, stop), daemon=True
            )
            reader.start()
        _run(rig, args, faulty, stop)
    except KeyboardInterrupt:
        pass
    finally:
        rig.stop()
    return 0


def _write_variants(rig: VirtualRig, target: str) -> None:
    """Write the rig's [[variant]] entries to a file, or stdout for '-'."""
    text = rig.variants_toml()
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text, encoding="utf-8")
        print(f"variants written to {target}")


def _run(
    rig: VirtualRig, args: argparse.Namespace, faulty: list[SimulatedMeter], stop: threading.Event
) -> None:
    """Wait for the end, applying time-based faults and printing counters as asked."""
    start = time.monotonic()
    timers: list[tuple[float, float, Callable[[SimulatedMeter], None]]] = []
    if args.silence_every > 0:
        timers.append((args.silence_every, 0.0, lambda m: m.silence(args.silence_for)))
    if args.unplug_every > 0:
        timers.append((args.unplug_every, 0.0, lambda m: m.unplug(args.unplug_for)))
    next_at = [start + every for every, _, _ in timers]
    next_stats = start + args.stats_every if args.stats_every > 0 else None
    while not stop.wait(0.05):
        now = time.monotonic()
        if args.duration is not None and now - start >= args.duration:
            break
        if rig.error is not None:
            print(f"simulate: the rig thread died: {rig.error!r}", file=sys.stderr)
            break
        for i, (every, _, action) in enumerate(timers):
            if now >= next_at[i]:
                next_at[i] += every
                for meter in faulty:
                    action(meter)
        if next_stats is not None and now >= next_stats:
            next_stats += args.stats_every
            _print_stats(rig, sys.stdout)


def _print_stats(rig: VirtualRig, out: TextIO) -> None:
    """One line of counters per meter."""
    for meter in rig.meters.values():
        s = meter.stats()
        out.write(
            f"stats {s.variant} telegrams={s.telegrams} dropped={s.dropped} "
            f"bytes={s.bytes_written} noise={s.noise_written} unplugs={s.unplugs} "
            f"plugged={int(s.plugged)} pty={s.pty}\n"
        )
    out.flush()


def _read_commands(rig: VirtualRig, inp: TextIO, out: TextIO, stop: threading.Event) -> None:
    """Execute fault commands from `inp`, one per line, until end of input or `quit`."""
    for line in inp:
        words = line.split()
        if not words:
            continue
        try:
            reply = execute(rig, words)
        except (ValueError, KeyError, IndexError) as exc:
            reply = f"error {exc}"
        if reply == "quit":
            stop.set()
            out.write("ok quit\n")
            out.flush()
            return
        out.write(reply + "\n")
        out.flush()


def execute(rig: VirtualRig, words: list[str]) -> str:
    """Run one control command on the rig; return the reply line."""
    command, rest = words[0].lower(), words[1:]
    if command == "quit":
        return "quit"
    if command == "stats":
        lines = []
        for meter in rig.meters.values():
            s = meter.stats()
            lines.append(f"{s.variant}:{s.telegrams}:{s.dropped}:{int(s.plugged)}")
        return "ok stats " + " ".join(lines)
    if command == "help":
        return "ok unplug|replug|silence|badcrc|truncate|noise VARIANT ...; stats; quit"
    if not rest:
        raise ValueError(f"{command}: which variant?")
    target = rest[0]
    meters = list(rig.meters.values()) if target == "all" else [rig.meter(target)]
    args = rest[1:]
    for meter in meters:
        if command == "unplug":
            meter.unplug(float(args[0]) if args else None)
        elif command == "replug":
            meter.replug()
        elif command == "silence":
            meter.silence(float(args[0]))
        elif command == "badcrc":
            meter.corrupt_crc(int(args[0]) if args else 1)
        elif command == "truncate":
            meter.truncate(int(args[0]) if args else 1)
        elif command == "noise":
            kind = NoiseKind(args[1]) if len(args) > 1 else NoiseKind.GARBAGE
            meter.inject_noise(int(args[0]) if args else 1024, kind)
        else:
            raise ValueError(f"unknown command {command!r} (try help)")
    return f"ok {command} {target} at {time.monotonic():.6f}"
