"""Measure the multiplexer: throughput at line rate on many ptys, and recovery after a replug.

    python -m gateway.bench.mux                   # 32 ptys at 115200 line rate, 10 s
    python -m gateway.bench.mux --unpaced         # as fast as the ptys take bytes
    python -m gateway.bench.mux --decode          # decode every telegram inline too
    python -m gateway.bench.mux --recovery-only

Throughput: the virtual rig runs in a child process (`p1-gateway simulate`, so it does not
share this process's GIL), every meter a 115200-baud model back to back at line rate; this
process runs one Multiplexer over the symlinks. Reported: telegrams/s and bytes/s received,
the reader thread's CPU (its own clock, pthread_getcpuclockid), this process's and the
simulator's CPU, and whether the reader kept up (the simulator dropped nothing, and what it
sent minus what arrived is only what was in flight).

Recovery: an in-process rig; one 1-second meter is unplugged for a while and plugged back,
repeatedly. Reported: unplug -> PortLost, replug -> PortOpened, replug -> first telegram.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from gateway.mux.events import FrameReceived, MuxEvent, PortLost, PortOpened
from gateway.mux.multiplexer import Multiplexer
from gateway.mux.profile import PortConfig

LINE_RATE_MODELS = (
    "fluvius-t211",
    "fluvius-s211",
    "iskra-am550-dsmr50",
    "kaifa-dsmr42",
    "landisgyr-e350-dsmr40",
    "landisgyr-e350-dsmr42",
    "smarty-lu",
    "sagemcom-t210-at",
    "kamstrup-se",
    "sagemcom-eon-hu",
    "iskra-ie5-be",
)


class _Counter:
    """The measuring consumer: counts frames and bytes per variant, optionally decodes."""

    def __init__(self, decode: bool, specs: dict[str, str]) -> None:
        self.frames: dict[str, int] = dict.fromkeys(specs, 0)
        self.bytes = 0
        self.bad = 0
        self.decode_errors = 0
        self.opened: set[str] = set()
        self.events: list[MuxEvent] = []
        self._specs = specs
        self._decode = None
        if decode:
            from gateway.p1 import decode_telegram

            self._decode = decode_telegram

    def __call__(self, event: MuxEvent) -> None:
        """Count one event (in the reader thread)."""
        if type(event) is FrameReceived:
            self.frames[event.variant] += 1
            self.bytes += len(event.frame.raw)
            if event.frame.crc_ok is False:
                self.bad += 1
            elif self._decode is not None:
                try:
                    # The framer has checked the CRC: do not compute it again (as app.py).
                    self._decode(event.frame.raw, self._specs[event.variant], crc_verified=True)
                except Exception:
                    self.decode_errors += 1
            return
        if type(event) is PortOpened:
            self.opened.add(event.variant)
        self.events.append(event)


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sim_command(proc: subprocess.Popen[str], command: str) -> str:
    """Send one command to the simulator; return its reply line."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("simulator ended")
        if line.startswith(("ok", "error")):
            return line.strip()


def measure_throughput(
    ports: int, seconds: float, warmup: float, unpaced: bool, decode: bool
) -> dict[str, Any]:
    """Run `ports` ptys at line rate through one Multiplexer; return the figures."""
    with tempfile.TemporaryDirectory(prefix="p1-measure-") as tmp:
        variants_file = Path(tmp) / "variants.toml"
        args = [sys.executable, "-m", "gateway", "simulate", "--count", str(ports)]
        for model in LINE_RATE_MODELS:
            args += ["--variant", model]
        args += ["--rate", "line", "--link-dir", tmp, "--variants-out", str(variants_file)]
        args += ["--commands"] + (["--no-pacing"] if unpaced else [])
        sim = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        try:
            assert sim.stdout is not None
            for line in sim.stdout:
                if line.startswith("ready"):
                    break
            entries = tomllib.loads(variants_file.read_text())["variant"]
            configs = [PortConfig(e["id"], e["port"], spec=e["spec"]) for e in entries]
            counter = _Counter(decode, {c.variant: c.spec for c in configs})
            mux = Multiplexer(counter, configs)
            mux.start()
            try:
                deadline = time.monotonic() + 20
                while len(counter.opened) < len(configs) and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(warmup)
                t0 = time.monotonic()
                p0, s0, m0 = mux.progress(), _proc_cpu_s(sim.pid), _self_cpu_s()
                f0, b0 = sum(counter.frames.values()), counter.bytes
                time.sleep(seconds)
                t1 = time.monotonic()
                p1, s1, m1 = mux.progress(), _proc_cpu_s(sim.pid), _self_cpu_s()
                f1, b1 = sum(counter.frames.values()), counter.bytes
                stats = _sim_command(sim, "stats")
                received = dict(counter.frames)
                snapshot = mux.snapshot()
            finally:
                mux.stop()
            _sim_command(sim, "quit")
            sim.wait(10)
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.wait()
    elapsed = t1 - t0
    sent = {}
    dropped = 0
    for item in stats.split()[2:]:
        variant, telegrams, drops, _plugged = item.split(":")
        sent[variant] = int(telegrams)
        dropped += int(drops)
    behind = {v: sent[v] - received.get(v, 0) for v in sent}
    reader_cpu = (p1.cpu_s or 0.0) - (p0.cpu_s or 0.0)
    return {
        "ports": ports,
        "paced_at_line_rate": not unpaced,
        "decode_inline": decode,
        "seconds": round(elapsed, 2),
        "telegrams_per_s": round((f1 - f0) / elapsed, 1),
        "bytes_per_s": round((b1 - b0) / elapsed),
        "bytes_per_s_per_port": round((b1 - b0) / elapsed / ports),
        "line_rate_bytes_per_s_per_port": 11520,
        "reader_cpu_percent": round(100 * reader_cpu / elapsed, 1),
        "gateway_process_cpu_percent": round(100 * (m1 - m0) / elapsed, 1),
        "simulator_cpu_percent": round(100 * (s1 - s0) / elapsed, 1),
        "loop_iterations_per_s": round((p1.iterations - p0.iterations) / elapsed),
        "crc_errors": counter.bad,
        "decode_errors": counter.decode_errors,
        "simulator_dropped": dropped,
        "max_sent_minus_received": max(behind.values()),
        "noise_bytes": sum(s.counters.noise_bytes for s in snapshot.values()),
        "truncated_or_oversize": sum(
            s.counters.truncated + s.counters.oversize for s in snapshot.values()
        ),
    }


def measure_recovery(trials: int, down_s: float) -> dict[str, Any]:
    """Unplug and replug one 1-second meter `trials` times; time detection and recovery."""
    from gateway.sim import VirtualRig, catalogue

    models = [catalogue()[m] for m in ("fluvius-t211", "iskra-am550-dsmr50", "kaifa-dsmr42")]
    victim = models[0].id
    lost_ms: list[float] = []
    reopen_ms: list[float] = []
    first_ms: list[float] = []
    events: list[MuxEvent] = []
    frames: list[FrameReceived] = []
    lock = threading.Lock()

    def consumer(event: MuxEvent) -> None:
        with lock:
            if isinstance(event, FrameReceived):
                if event.variant == victim:
                    frames.append(event)
            else:
                events.append(event)

    def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                found = predicate()
            if found:
                return found
            time.sleep(0.002)
        raise TimeoutError("no recovery")

    with (
        tempfile.TemporaryDirectory(prefix="p1-recovery-") as tmp,
        VirtualRig(models, link_dir=tmp) as rig,
    ):
        configs = [PortConfig(v, p, spec=rig.meter(v).model.spec) for v, p in rig.ports().items()]
        with Multiplexer(consumer, configs):
            meter = rig.meter(victim)
            wait_for(lambda: frames)
            for trial in range(trials):
                time.sleep(0.3 + 0.37 * trial % 1.0)  # vary the phase against the schedule
                meter.unplug(down_s)
                lost = wait_for(
                    lambda n=trial: [e for e in events if isinstance(e, PortLost)][n : n + 1]
                )[0]
                unplugged_at = wait_for(lambda: meter.stats().last_unplug_monotonic_ns)
                opened = wait_for(
                    lambda n=trial: [
                        e for e in events if isinstance(e, PortOpened) and e.variant == victim
                    ][n + 1 : n + 2]
                )[0]
                plugged_at = meter.stats().last_plug_monotonic_ns
                assert plugged_at is not None
                first = wait_for(
                    lambda p=plugged_at: [f for f in frames if f.received_monotonic_ns > p][:1]
                )[0]
                lost_ms.append((lost.at_monotonic_ns - unplugged_at) / 1e6)
                reopen_ms.append((opened.at_monotonic_ns - plugged_at) / 1e6)
                first_ms.append((first.received_monotonic_ns - plugged_at) / 1e6)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "min": round(min(values), 1),
            "median": round(statistics.median(values), 1),
            "max": round(max(values), 1),
        }

    return {
        "trials": trials,
        "down_s": down_s,
        "meter_interval_s": models[0].interval_s,
        "unplug_to_lost_ms": summary(lost_ms),
        "replug_to_reopened_ms": summary(reopen_ms),
        "replug_to_first_telegram_ms": summary(first_ms),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the figures (text, or JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.mux", description=__doc__)
    parser.add_argument("--ports", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--unpaced", action="store_true", help="no line pacing: max throughput")
    parser.add_argument("--decode", action="store_true", help="decode each telegram inline")
    parser.add_argument("--recovery-trials", type=int, default=5)
    parser.add_argument("--down", type=float, default=1.0, help="seconds unplugged per trial")
    parser.add_argument("--recovery-only", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    if not args.recovery_only:
        results["throughput"] = measure_throughput(
            args.ports, args.seconds, args.warmup, args.unpaced, args.decode
        )
    if not args.throughput_only:
        results["recovery"] = measure_recovery(args.recovery_trials, args.down)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for section, figures in results.items():
            if isinstance(figures, dict):
                print(f"[{section}]")
                for key, value in figures.items():
                    print(f"  {key:34} {value}")
            else:
                print(f"{section}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
