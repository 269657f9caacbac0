"""Instructions per telegram of the gateway's hot path, counted by valgrind (callgrind).

    python -m gateway.bench.callgrind                 # both modes, counts and native timing
    python -m gateway.bench.callgrind --telegrams 200 --batched-telegrams 800
    python -m gateway.bench.callgrind --rig           # the daemon itself at rig load

The measured loop is the daemon's per-telegram path with its real parts, in one process: the
virtual rig's telegrams for 32 meters (rendered beforehand, the same in every run), fed to a
`Framer` in 115-byte chunks (what a 115200-baud line gives a reader every 10 ms), decoded by
`decode_telegram`, submitted to a real `Publisher` (payload, routing, seq, spool batch, paho
QoS 1 to a private mosquitto, PUBACK handling in paho's and the writer's threads).
Two modes:
- paced: each telegram is acknowledged by the broker before the next one goes (the rig-load
  path: every wake-up and hand-off paid per telegram);
- batched: all at once (the flood path: acknowledgements and writes batched).

valgrind counts the user-space instructions of every thread of the process (not the kernel's,
not mosquitto's). Each mode runs twice under `valgrind --tool=callgrind`: with N telegrams and
with none, the same set-up otherwise; instructions per telegram = (I(N) - I(0)) / N. The same
loop then runs natively with 10 N telegrams to time it (CPU of the loop), which gives this
machine's instructions per second on this code: the basis of the Raspberry Pi estimate in
docs/performance.md.

`--rig` counts the daemon itself instead: `bench e2e`'s rig load (32 ports, one telegram a
second each, at line pace) with the gateway process run under callgrind, its counting switched
on (`callgrind_control -i on`) only for the measured window. Everything the daemon does at rig
load is in it: the reader's wake-ups, framing, decoding, publishing, the PUBACKs, the spool's
commits, the status file, health and the watchdog. valgrind makes the gateway many times slower,
so its wake-ups come in a different pattern (more reads per telegram, fewer PUBACKs per read):
the count is of this code under that pattern, not a native run's.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.p1 import Framer

CHUNK = 115
"""Bytes a 115200-baud line delivers in 10 ms (11 520 bytes/s): what the rig writes per tick."""
METERS = 32
SLOTS = 16


def rig_telegrams(meters: int = METERS, slots: int = SLOTS) -> list[tuple[str, str, bytes]]:
    """(variant, spec, raw) for `slots` consecutive telegrams of each of `meters` rig meters."""
    from gateway.sim import EVEN_PARITY, models_for

    start = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    out = []
    for slot in range(slots):
        for model in models_for(meters):
            raw = model.template.render(slot, start + timedelta(seconds=slot * model.interval_s))
            if model.seven_e_one:
                raw = raw.translate(EVEN_PARITY)
            out.append((model.id, model.spec, raw))
    return out


def rig_framers(meters: int = METERS) -> dict[str, Framer]:
    """A framer per rig meter, stripping parity where the meter sends 7E1 (as the daemon)."""
    from gateway.p1 import Framer
    from gateway.sim import models_for

    return {m.id: Framer(strip_parity=m.seven_e_one) for m in models_for(meters)}


def worker(telegrams: int, paced: bool) -> int:
    """The measured loop (what valgrind runs): set-up, `telegrams` telegrams, tear-down."""
    from gateway.devkit.mosquitto import MosquittoBroker, wait_until
    from gateway.p1 import Frame, decode_telegram
    from gateway.publish import (
        MqttSettings,
        Publisher,
        PublisherSettings,
        Slot,
        SlotSchedule,
        SpoolSettings,
    )

    feed = rig_telegrams()
    framers = rig_framers()
    broker = MosquittoBroker({"rig-a": "rig-secret", "bench": "bench-secret"}).start()
    folder = Path(tempfile.mkdtemp(prefix="p1gw-callgrind-"))
    now = datetime.now(UTC)
    publisher = Publisher(
        PublisherSettings(
            "rig-a",
            MqttSettings(port=broker.port, username="rig-a", password="rig-secret"),
            SpoolSettings(dir=folder / "spool"),
            require_sync=False,
        ),
        SlotSchedule([Slot("bench", now - timedelta(hours=1), now + timedelta(hours=1))]),
    )
    try:
        publisher.start()
        wait_until(lambda: publisher.status().connected, 60)
        cpu0 = time.process_time()
        for n in range(telegrams):
            variant, spec, raw = feed[n % len(feed)]
            framer = framers[variant]
            for start in range(0, len(raw), CHUNK):
                for event in framer.feed(raw[start : start + CHUNK]):
                    if isinstance(event, Frame):
                        telegram = decode_telegram(event.raw, spec, crc_verified=True)
                        mono, wall = time.monotonic_ns(), time.time_ns()
                        publisher.submit_telegram(variant, telegram, mono, wall)
            if paced and not publisher.flush(60):
                print("bench callgrind: the broker did not acknowledge", file=sys.stderr)
                return 1
        if not publisher.flush(600):
            print("bench callgrind: the broker did not acknowledge", file=sys.stderr)
            return 1
        print(f"loop_cpu_s={time.process_time() - cpu0:.6f}")
        return 0
    finally:
        publisher.stop(timeout=5)
        broker.close()
        shutil.rmtree(folder, ignore_errors=True)


def _worker_command(telegrams: int, paced: bool) -> list[str]:
    """The command line of one worker run."""
    command = [sys.executable, "-m", "gateway.bench.callgrind", "--worker"]
    command += ["--telegrams", str(telegrams)] + (["--paced"] if paced else [])
    return command


def count_instructions(telegrams: int, paced: bool) -> int:
    """Instructions (Ir) of one worker run under callgrind, all threads."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    with tempfile.TemporaryDirectory(prefix="p1gw-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                "--cache-sim=no",
                "--branch-sim=no",
                *_worker_command(telegrams, paced),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"valgrind run failed:\n{proc.stderr[-3000:]}")
        match = re.search(r"^(?:summary|totals):\s*(\d+)", out.read_text(), re.M)
        if match is None:
            raise RuntimeError("no instruction total in the callgrind output")
        return int(match.group(1))


@dataclass(frozen=True, slots=True)
class ModeFigures:
    """One mode's figures."""

    mode: str
    telegrams: int
    instructions_per_telegram: float
    native_us_per_telegram: float
    """CPU time per telegram of the same loop run natively (this process's threads, user +
    system; the broker's not included)."""

    @property
    def instructions_per_second(self) -> float:
        """What this machine executes per CPU second on this code."""
        return self.instructions_per_telegram / (self.native_us_per_telegram / 1e6)


def native_cpu_s(telegrams: int, paced: bool) -> float:
    """CPU seconds of this process's threads (user + system) in the loop of a native run."""
    proc = subprocess.run(_worker_command(telegrams, paced), capture_output=True, text=True)
    match = re.search(r"^loop_cpu_s=([\d.]+)$", proc.stdout, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"worker failed:\n{proc.stderr[-3000:]}")
    return float(match.group(1))


def measure(mode: str, telegrams: int) -> ModeFigures:
    """Instructions per telegram (callgrind, N vs 0) and native CPU per telegram (10 N)."""
    paced = mode == "paced"
    with_n = count_instructions(telegrams, paced)
    without = count_instructions(0, paced)
    native = native_cpu_s(telegrams * 10, paced)
    return ModeFigures(
        mode, telegrams, (with_n - without) / telegrams, 1e6 * native / (telegrams * 10)
    )


@dataclass(frozen=True, slots=True)
class RigFigures:
    """The daemon under callgrind at rig load, over the measured window."""

    ports: int
    seconds: float
    telegrams: int
    """Telegrams the simulator wrote in the window."""
    received: int
    """Telegrams the subscriber received in the window."""
    instructions: int

    @property
    def instructions_per_telegram(self) -> float:
        """All threads' user-space instructions per telegram written."""
        return self.instructions / max(1, self.telegrams)


@contextlib.contextmanager
def _counting(pid: int) -> Iterator[None]:
    """callgrind's counting on for the block, in the process `pid` (started with it off);
    then its counts dumped (a file `.1` beside the output file) while the process runs on."""
    control = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run([control, "-i", "on", str(pid)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([control, "-i", "off", str(pid)], check=True, capture_output=True)
        subprocess.run([control, "-d", str(pid)], check=True, capture_output=True)


def rig_instructions(ports: int, settle_s: float, window_s: float) -> RigFigures:
    """Run `bench e2e`'s rig load with the gateway under callgrind; count over the window."""
    from gateway.bench.e2e import configure
    from gateway.bench.e2e.run import Bench

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(
        [
            *("--ports", str(ports), "--skip-baseline", "--skip-flood", "--load-rate", "0"),
            *("--idle-seconds", "0", "--settle", str(settle_s), "--rig-seconds", str(window_s)),
        ]
    )
    with tempfile.TemporaryDirectory(prefix="p1gw-callgrind-rig-") as tmp:
        out = Path(tmp) / "callgrind.out"
        args.gateway_wrapper = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--cache-sim=no",
            "--branch-sim=no",
            f"--callgrind-out-file={out}",
        ]
        bench = Bench(args)
        try:
            bench.start()
            side = bench.sides["ours"]
            result = bench.measure(side, "rig", around_window=_counting(side.pid))
        finally:
            bench.close()  # the gateway's own exit dump counts nothing more (counting is off)
        # A dump's `summary:` line says 0 when counting is off at the moment of the dump; its
        # `totals:` line holds what was counted.
        totals = [
            int(m.group(1))
            for f in Path(tmp).glob("callgrind.out*")
            for m in [re.search(r"^totals:\s*(\d+)", f.read_text(), re.M)]
            if m is not None
        ]
    if not totals:
        raise RuntimeError("no instruction total in the callgrind output")
    return RigFigures(ports, result.seconds, result.sent, result.telegrams_out, sum(totals))


def main(argv: list[str] | None = None) -> int:
    """Measure both modes (or, with --worker, run the loop once)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.callgrind", description=__doc__)
    parser.add_argument("--worker", action="store_true", help="run the measured loop once")
    parser.add_argument("--paced", action="store_true", help="worker: one telegram at a time")
    parser.add_argument("--telegrams", type=int, default=200, help="paced telegrams (default 200)")
    parser.add_argument(
        "--batched-telegrams", type=int, default=800, help="batched telegrams (default 800)"
    )
    parser.add_argument("--rig", action="store_true", help="count the daemon itself at rig load")
    parser.add_argument("--rig-ports", type=int, default=32, help="--rig: ports (default 32)")
    parser.add_argument(
        "--rig-settle", type=float, default=15.0, help="--rig: s of rig load before counting"
    )
    parser.add_argument("--rig-seconds", type=float, default=40.0, help="--rig: s counted")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.telegrams, args.paced)
    if shutil.which("valgrind") is None:
        print("bench callgrind: valgrind is not installed (apt install valgrind)", file=sys.stderr)
        return 2
    if args.rig:
        rig = rig_instructions(args.rig_ports, args.rig_settle, args.rig_seconds)
        print(
            f"bench callgrind --rig: the daemon under valgrind --tool=callgrind at rig load, "
            f"{rig.ports} ports at 1 telegram/s each; counted {rig.seconds:.1f} s: "
            f"{rig.telegrams} telegrams written, {rig.received} received; "
            f"{rig.instructions:,} instructions, {rig.instructions_per_telegram:,.0f} per telegram "
            "(user space, all threads, everything the daemon does included)",
            flush=True,
        )
        return 0 if rig.telegrams and rig.received >= rig.telegrams * 0.9 else 1
    import platform

    print(
        f"bench callgrind: {METERS} rig meters x {SLOTS} slots, {CHUNK}-byte chunks; "
        f"valgrind --tool=callgrind, user-space instructions of all threads; "
        f"Python {platform.python_version()} {platform.machine()}",
        flush=True,
    )
    print(f"{'mode':8} {'telegrams':>9} {'instr/telegram':>15} {'native us':>10} {'instr/s':>12}")
    for mode, count in (("paced", args.telegrams), ("batched", args.batched_telegrams)):
        figures = measure(mode, count)
        print(
            f"{figures.mode:8} {figures.telegrams:>9} "
            f"{figures.instructions_per_telegram:>15,.0f} "
            f"{figures.native_us_per_telegram:>10.1f} {figures.instructions_per_second:>12.3g}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
