"""The run of `bench e2e`: broker, rigs, the two sides' processes, the subscriber; the phases."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.bench.e2e.procstats import (
    proc_cpu_s,
    proc_memory_mb,
    proc_threads,
    thread_cpu_s,
    thread_delta,
)
from gateway.bench.e2e.report import PhaseResult, phase_line
from gateway.bench.e2e.subscriber import (
    BASE_RIG,
    HOLDER,
    OURS_RIG,
    PASSWORDS,
    SYS_RECEIVED,
    Subscriber,
)

#: What `--baseline` can run as the other side: the module of each and its own options.
BASELINES = {
    "field": ("gateway.bench.baseline",),
    "floor": ("gateway.bench.floor",),
    "floor-decode": ("gateway.bench.floor", "--decode"),
}


@dataclass
class Side:
    """One contender: its rig (simulator), its process, what it publishes per telegram."""

    name: str
    rig_id: str
    rig: Any  # gateway.sim.VirtualRig
    proc: subprocess.Popen[bytes] | None = None
    messages_per_telegram: int = 1
    written: dict[str, dict[int, int]] = field(default_factory=dict)
    """variant -> simulator seq -> monotonic ns its last byte was written (while recording)."""
    stats: Callable[[], dict[str, Any]] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def sent(self) -> int:
        """Telegrams the simulator has queued so far (a dropped one is not counted)."""
        return sum(m.stats().telegrams for m in self.rig.meters.values())

    def bytes_written(self) -> int:
        """Bytes the simulator has written to the ptys so far."""
        return sum(m.stats().bytes_written for m in self.rig.meters.values())

    def record_writes(self, on: bool) -> None:
        """Have every meter report when each telegram's last byte is written (or stop)."""
        for variant, meter in self.rig.meters.items():
            if on:
                times = self.written.setdefault(variant, {})
                meter.on_written = times.__setitem__
            else:
                meter.on_written = None


class Bench:
    """Broker, rigs, processes, subscriber; phases; figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="p1gw-bench-e2e-"))
        self.broker: Any = None
        self.subscriber: Subscriber | None = None
        self.sides: dict[str, Side] = {}
        self.results: list[PhaseResult] = []
        self.idle_percent: dict[str, float] = {}
        self.problems: list[str] = []

    # -- set-up --

    def start(self) -> None:
        """Broker, rigs, the gateway and the baseline, the subscriber; wait until all flow."""
        from gateway.devkit.mosquitto import MosquittoBroker
        from gateway.sim import VirtualRig, models_for

        self.broker = MosquittoBroker(
            PASSWORDS,
            rigs=[OURS_RIG, BASE_RIG],
            extra_acl=f"user {HOLDER}\ntopic read {SYS_RECEIVED}",
        )
        with self.broker.conf.open("a") as conf:
            conf.write("\n# Added by bench e2e: $SYS counts every second.\nsys_interval 1\n")
        self.broker.start()
        models = models_for(self.args.ports)
        names = [("ours", OURS_RIG, 2)]
        if not self.args.skip_baseline:
            names.append(("baseline", BASE_RIG, 1))
        for name, rig_id, per_telegram in names:
            rig = VirtualRig(
                models,
                link_dir=self.dir / name / "ports",
                rate=self.args.rig_rate,
                start_paused=True,
            )
            rig.start()
            self.sides[name] = Side(name, rig_id, rig, messages_per_telegram=per_telegram)
        self.subscriber = Subscriber(self.broker.host, self.broker.port).start()
        self._start_gateway(self.sides["ours"])
        if "baseline" in self.sides:
            self._start_baseline(self.sides["baseline"])
        self._wait_gateway_ports(self.sides["ours"])
        for side in self.sides.values():
            self._warm_up(side)

    def _env(self) -> dict[str, str]:
        """The child processes' environment: no P1GW_ overrides, no systemd sockets."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("P1GW_")}
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(key, None)
        return env

    def _start_gateway(self, side: Side) -> None:
        """Write the gateway's config files and start `python -m gateway run`."""
        from gateway.devkit.files import write_gateway_files

        folder = self.dir / "ours"
        now = datetime.now(UTC)
        config = write_gateway_files(
            folder,
            rig=OURS_RIG,
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            password=PASSWORDS[OURS_RIG],
            variants_toml=side.rig.variants_toml(),
            slots=[(HOLDER, now - timedelta(hours=1), now + timedelta(days=1))],
            comment="bench e2e: the gateway's defaults, but for paths, the broker and the clock",
        )
        # `gateway_wrapper` (set by `python -m gateway.bench.callgrind --rig`, no CLI flag): a
        # command the gateway runs under, such as valgrind.
        wrapper = list(getattr(self.args, "gateway_wrapper", None) or [])
        with (folder / "gateway.log").open("ab") as log:
            side.proc = subprocess.Popen(
                [*wrapper, sys.executable, "-m", "gateway", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                cwd=folder,
            )
        side.messages_per_telegram = 2

    def _start_baseline(self, side: Side) -> None:
        """Start `python -m gateway.bench.baseline` on the baseline rig's ports."""
        folder = self.dir / "baseline"
        (folder / "mqtt.pass").write_text(PASSWORDS[BASE_RIG] + "\n")
        variants = folder / "variants.toml"
        variants.write_text(side.rig.variants_toml())
        stderr = (folder / "baseline.log").open("ab")
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    *BASELINES[self.args.baseline],
                    "--variants",
                    str(variants),
                    "--host",
                    self.broker.host,
                    "--port",
                    str(self.broker.port),
                    "--username",
                    BASE_RIG,
                    "--password-file",
                    str(folder / "mqtt.pass"),
                    "--topic-prefix",
                    f"p1/{BASE_RIG}/slot/{HOLDER}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self._env(),
                cwd=folder,
            )
        finally:
            stderr.close()
        side.proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the baseline did not start: {self._tail(folder / 'baseline.log')}")
        lock = threading.Lock()

        def stats() -> dict[str, Any]:
            assert proc.stdin is not None and proc.stdout is not None
            with lock:
                proc.stdin.write(b"stats\n")
                proc.stdin.flush()
                return dict(json.loads(proc.stdout.readline()))

        side.stats = stats

    def _wait_gateway_ports(self, side: Side, timeout: float = 60.0) -> None:
        """Wait until the gateway's status file shows every port up.

        pyserial flushes a port's input when it opens it: a telegram written before that is
        lost, and would count as missing.
        """
        status = self.dir / "ours" / "run" / "status.json"
        deadline = time.monotonic() + timeout
        want = set(side.rig.meters)
        while True:
            with contextlib.suppress(OSError, ValueError):
                ports = json.loads(status.read_text()).get("ports", {})
                if want <= {v for v, p in ports.items() if p.get("state") == "up"}:
                    return
            if side.proc is not None and side.proc.poll() is not None:
                raise RuntimeError(f"the gateway ended at start-up:\n{self._log_tail(side)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway's ports did not open:\n{self._log_tail(side)}")
            time.sleep(0.1)

    def _warm_up(self, side: Side, timeout: float = 60.0) -> None:
        """Run the side at rig load until every variant has come through, then pause it."""
        assert self.subscriber is not None
        side.rig.set_rate(self.args.rig_rate, line_pacing=True)
        side.rig.resume()
        deadline = time.monotonic() + timeout
        want = len(side.rig.meters)
        while True:
            seen = self._variants_seen(side)
            if seen >= want:
                break
            if side.proc is not None and side.proc.poll() is not None:
                raise RuntimeError(f"{side.name} ended during warm-up:\n{self._log_tail(side)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{side.name}: only {seen} of {want} ports delivered within {timeout:.0f} s"
                    f":\n{self._log_tail(side)}"
                )
            time.sleep(0.1)
        side.rig.pause()
        self._settle(side)
        self.subscriber.recording = False

    def _variants_seen(self, side: Side) -> int:
        """How many variants of a side the subscriber has seen a telegram from (recording)."""
        assert self.subscriber is not None
        arrivals = self.subscriber.sides[side.rig_id]
        self.subscriber.recording = True
        if side.rig_id == OURS_RIG:
            return len({variant for variant, _ in arrivals.telegram_at})
        return len({json.loads(p)["variant"] for _, p in arrivals.payloads})

    def _log_tail(self, side: Side) -> str:
        """The end of a side's log."""
        name = "gateway.log" if side.name == "ours" else "baseline.log"
        return self._tail(self.dir / side.name / name)

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        """The last lines of a file."""
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _settle(self, side: Side, timeout: float = 120.0) -> bool:
        """Wait until the side's rig has written everything and the subscriber got it all."""
        assert self.subscriber is not None
        side.rig.wait_drained(30)
        arrivals = self.subscriber.sides[side.rig_id]
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = arrivals.telegrams
            if count != last:
                last, last_change = count, time.monotonic()
            if count >= side.sent() and time.monotonic() - last_change >= 0.3:
                return True
            if time.monotonic() - last_change >= 10.0:
                return False  # nothing moves any more: something is missing
            time.sleep(0.05)
        return False

    # -- phases --

    def _per_meter_rate(self, kind: str) -> float | str:
        """What each meter is set to in a phase: telegrams/s, or "line" (back to back)."""
        n = len(next(iter(self.sides.values())).rig.meters)
        if kind == "rig":
            return float(self.args.rig_rate)
        if kind == "load":
            return float(self.args.load_rate) / n
        return float(self.args.flood_rate) / n if self.args.flood_rate > 0 else "line"

    def measure(
        self,
        side: Side,
        kind: str,
        around_window: contextlib.AbstractContextManager[object] | None = None,
    ) -> PhaseResult:
        """One phase of `kind` ("rig", "load", "flood") for one side; the other rig is paused.

        `around_window` is entered just before the measured window starts and left just after
        it ends (after the settling time).
        """
        assert self.subscriber is not None
        args = self.args
        sub = self.subscriber
        arrivals = sub.sides[side.rig_id]
        recording = kind in ("rig", "load")  # latency measured; a flood is only counted
        rate = self._per_meter_rate(kind)
        if recording:
            if side.rig_id == OURS_RIG:
                sub.want_raw(True)
            side.written.clear()
            arrivals.telegram_at.clear()
            arrivals.raw_of.clear()
            arrivals.payloads.clear()
            side.record_writes(True)
        # At rig load the serial line's pace; above it, as fast as the pty takes bytes.
        side.rig.set_rate(rate, line_pacing=kind == "rig")
        sub.recording = recording
        if isinstance(rate, float):
            self._resume_staggered(side, rate)
        else:
            side.rig.resume()
        time.sleep(args.settle)
        seconds = {"rig": args.rig_seconds, "load": args.load_seconds}.get(kind, args.flood_seconds)
        broker_pid = self.broker.proc.pid
        stats0 = side.stats() if side.stats is not None else None
        with around_window or contextlib.nullcontext():
            t0 = time.monotonic_ns()
            cpu0, sim0 = proc_cpu_s(side.pid), thread_cpu_s("p1-sim-rig")
            mosq0 = proc_cpu_s(broker_pid)
            threads0 = proc_threads(side.pid)
            out0, sent0, bytes0 = arrivals.telegrams, side.sent(), side.bytes_written()
            time.sleep(seconds)
            t1 = time.monotonic_ns()
            cpu1, sim1 = proc_cpu_s(side.pid), thread_cpu_s("p1-sim-rig")
            mosq1 = proc_cpu_s(broker_pid)
            threads1 = proc_threads(side.pid)
            out1, sent1, bytes1 = arrivals.telegrams, side.sent(), side.bytes_written()
        stats1 = side.stats() if side.stats is not None else None
        rss, hwm = proc_memory_mb(side.pid)
        side.rig.pause()
        if not self._settle(side):
            self.problems.append(
                f"{side.name} {kind}: {side.sent() - arrivals.telegrams} telegrams sent "
                "were not received"
            )
        if recording:
            side.record_writes(False)
        sub.recording = False
        if recording and side.rig_id == OURS_RIG:
            sub.want_raw(False)
        result = PhaseResult(
            side=side.name,
            kind=kind,
            seconds=(t1 - t0) / 1e9,
            cpu_s=cpu1 - cpu0,
            rss_mb=rss,
            hwm_mb=hwm,
            telegrams_out=out1 - out0,
            sent=sent1 - sent0,
            bytes_written=bytes1 - bytes0,
            broker_in_per_s=sub.broker_received_rate(t0, t1),
            sim_cpu_s=sim1 - sim0,
            broker_cpu_s=mosq1 - mosq0,
            parsed=None
            if stats0 is None or stats1 is None
            else stats1["telegrams"] - stats0["telegrams"],
            threads=thread_delta(threads0, threads1),
        )
        if recording:
            result.latencies_ms, result.unmatched = self._latencies(side, t0, t1)
        self.results.append(result)
        return result

    def _resume_staggered(self, side: Side, rate: float) -> None:
        """Start the meters one after the other, spread evenly over one period: real meters'
        seconds are not in step (all in step would be the worst case, not the rig)."""
        meters = list(side.rig.meters.values())
        gap = 1.0 / rate / len(meters)
        for meter in meters:
            meter.resume()
            time.sleep(gap)

    def _latencies(self, side: Side, t0: int, t1: int) -> tuple[list[float], int]:
        """Latency of each telegram whose last byte was written in [t0, t1]; and how many of
        those could not be matched to a received message."""
        assert self.subscriber is not None
        arrivals = self.subscriber.sides[side.rig_id]
        received: dict[tuple[str, int], int] = {}
        if side.rig_id == OURS_RIG:
            for key, at in arrivals.telegram_at.items():
                raw = arrivals.raw_of.get(key)
                if raw is None:
                    continue
                seq = side.rig.meter(key[0]).sequence_of(raw)
                if seq is not None:
                    received[(key[0], seq)] = at
        else:
            for at, payload in arrivals.payloads:
                message = json.loads(payload)
                variant = message["variant"]
                seq = side.rig.meter(variant).sequence_of(message["raw"].encode("latin-1"))
                if seq is not None:
                    received[(variant, seq)] = at
        latencies, unmatched = [], 0
        for variant, times in side.written.items():
            for seq, written in times.items():
                if not t0 <= written <= t1:
                    continue
                arrived = received.get((variant, seq))
                if arrived is None:
                    unmatched += 1
                else:
                    latencies.append((arrived - written) / 1e6)
        return latencies, unmatched

    def kinds(self) -> list[str]:
        """The phase kinds of a round, in order."""
        kinds = ["rig"]
        if self.args.load_rate > 0:
            kinds.append("load")
        if not self.args.skip_flood:
            kinds.append("flood")
        return kinds

    def measure_idle(self) -> None:
        """Every side's CPU with no telegram at all (all rigs paused), over one window."""
        if self.args.idle_seconds <= 0:
            return
        time.sleep(self.args.settle)
        start = {name: proc_cpu_s(side.pid) for name, side in self.sides.items()}
        threads = {name: proc_threads(side.pid) for name, side in self.sides.items()}
        t0 = time.monotonic()
        time.sleep(self.args.idle_seconds)
        seconds = time.monotonic() - t0
        for name, side in self.sides.items():
            self.idle_percent[name] = 100 * (proc_cpu_s(side.pid) - start[name]) / seconds
        print(
            "  idle (all rigs paused) CPU: "
            + ", ".join(f"{n} {v:.2f} %" for n, v in self.idle_percent.items()),
            flush=True,
        )
        for name, side in self.sides.items():
            used = thread_delta(threads[name], proc_threads(side.pid))
            print(
                f"    {name} threads (CPU %, wake-ups/s): "
                + ", ".join(
                    f"{t} {100 * u.cpu_s / seconds:.2f} % {u.switches / seconds:.1f}"
                    for t, u in sorted(used.items(), key=lambda kv: -kv[1].cpu_s)
                    if u.cpu_s or u.switches
                ),
                flush=True,
            )

    def run(self) -> None:
        """Idle, then all rounds: each phase kind for each side, the order rotating per round."""
        self.measure_idle()
        names = list(self.sides)
        for index in range(max(1, self.args.rounds)):
            order = names[index % len(names) :] + names[: index % len(names)]
            for kind in self.kinds():
                for name in order:
                    result = self.measure(self.sides[name], kind)
                    print(f"  round {index + 1} {phase_line(result)}", flush=True)

    def check_complete(self) -> dict[str, int]:
        """Telegrams each side's simulator sent that never reached the subscriber."""
        assert self.subscriber is not None
        missing = {}
        for side in self.sides.values():
            arrivals = self.subscriber.sides[side.rig_id]
            missing[side.name] = side.sent() - arrivals.telegrams
        return missing

    def close(self) -> None:
        """Stop everything started here; remove the folder unless kept."""
        for side in self.sides.values():
            proc = side.proc
            if proc is not None and proc.poll() is None:
                if proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.write(b"quit\n")
                        proc.stdin.flush()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            side.rig.stop()
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.broker is not None:
            self.broker.close()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
