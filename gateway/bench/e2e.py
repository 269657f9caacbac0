"""`p1-gateway bench e2e`: the whole gateway, pseudo-terminal to subscriber, against a baseline.

One run stands up:
- a private mosquitto (`gateway.devkit.mosquitto`: the project's config and ACL, a free
  loopback port, `sys_interval 1` added so that `$SYS` counts what came in every second);
- two virtual rigs of N meters each (`gateway.sim`, default 32 pseudo-terminals over the
  default rig's models), both in this process: one for the gateway, one for the baseline;
- the gateway as a process (`python -m gateway run --config FILE`, rig `rig-a`, a slot for the
  holder `bench` covering the run, defaults otherwise);
- the baseline as a process (`python -m gateway.bench.baseline`, rig `rig-b`): one thread per
  port, pyserial, dsmr_parser's TelegramBuffer and TelegramParser, json, paho QoS 1;
- a subscriber (paho, the holder `bench`) that takes every message's arrival time.

`--baseline floor` (or `floor-decode`) runs `python -m gateway.bench.floor` as the other side
instead: not a rival but a lower bound, the least a Python bridge does a telegram (one thread,
one read a wake-up, the CRC, one hand-built PUBLISH; `floor-decode` adds the gateway's decoder and
encoder too). The gateway's CPU is then read against what no Python design goes below on the
same machine in the same run; the ratio target is only taken against the field's baseline.

Phases, each for one side while the other side's rig is paused, in rounds whose order rotates
so that machine noise weighs on both alike:
- rig load: every meter sends one telegram a second, paced at its serial line's rate, the
  meters' seconds spread evenly (real meters are not in step). Latency: from the moment the
  simulator wrote a telegram's last byte to the pty (its `on_written` hook) to the
  subscriber's receipt of the decoded message. CPU of the side's process over the phase.
- load: the same at an equal offered rate for both sides (`--load-rate` telegrams/s in total,
  default 800, unpaced): CPU per telegram side by side, and latency under load.
- flood: every meter back to back, unpaced (as fast as the pty takes bytes; or `--flood-rate`
  telegrams/s in total). Telegrams/s into mosquitto (`$SYS/broker/publish/messages/received`,
  divided by the messages per telegram: 2 for the gateway, telegram + raw, 1 for the baseline),
  out of it (the subscriber's count), the simulator's own output, CPU per telegram.
RSS (VmRSS, VmHWM) of each process is read at the end of each phase. After each phase every
telegram the simulator sent must reach the subscriber (nothing lost); a shortfall is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HOLDER = "bench"
OURS_RIG = "rig-a"
BASE_RIG = "rig-b"
PASSWORDS = {OURS_RIG: "rig-a-secret", BASE_RIG: "rig-b-secret", HOLDER: "bench-secret"}
SYS_RECEIVED = "$SYS/broker/publish/messages/received"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The issue's targets.
TARGET_RATE = 3000.0
TARGET_RATIO = 10.0
TARGET_P99_MS = 5.0
TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MB = 60.0
#: What `--baseline` can run as the other side: the module of each and its own options.
BASELINES = {
    "field": ("gateway.bench.baseline",),
    "floor": ("gateway.bench.floor",),
    "floor-decode": ("gateway.bench.floor", "--decode"),
}


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


# --- measuring processes -------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, for clock_getcpuclockid (Python wraps only the per-thread one)."""
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process (all its threads, ended ones too): its CPU-time clock, to the
    nanosecond; /proc/PID/stat's user + system ticks (10 ms each) where there is none."""
    libc = _libc()
    clock = ctypes.c_int()
    if libc is not None and libc.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        with contextlib.suppress(OSError):
            return time.clock_gettime(clock.value)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _task_cpu_s(task: Path, stat_fields: list[str]) -> float:
    """A thread's CPU seconds: schedstat's run time in ns, else its stat ticks."""
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return (int(stat_fields[11]) + int(stat_fields[12])) / CLK_TCK


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (MiB), from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


@dataclass(frozen=True, slots=True)
class ThreadUse:
    """One kernel thread name's CPU seconds and context switches (all threads of that name)."""

    cpu_s: float
    switches: int
    """Voluntary + involuntary context switches: about how often the threads woke."""


def proc_threads(pid: int) -> dict[str, ThreadUse]:
    """Per kernel thread name (comm), CPU and context switches of a process's threads."""
    out: dict[str, ThreadUse] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        cpu = _task_cpu_s(task, fields)
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line
        )
        old = out.get(comm, ThreadUse(0.0, 0))
        out[comm] = ThreadUse(old.cpu_s + cpu, old.switches + switches)
    return out


def thread_delta(before: dict[str, ThreadUse], after: dict[str, ThreadUse]) -> dict[str, ThreadUse]:
    """What each thread name used between two `proc_threads` readings."""
    zero = ThreadUse(0.0, 0)
    return {
        name: ThreadUse(
            use.cpu_s - before.get(name, zero).cpu_s, use.switches - before.get(name, zero).switches
        )
        for name, use in after.items()
    }


def thread_cpu_s(name_prefix: str) -> float:
    """CPU seconds of this process's threads whose name starts with `name_prefix`."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith(name_prefix) and thread.ident is not None:
            with contextlib.suppress(OSError, ProcessLookupError):
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- the subscriber ------------------------------------------------------------------------


@dataclass(slots=True)
class Arrivals:
    """What the subscriber saw of one side."""

    telegrams: int = 0
    raws: int = 0
    # While recording (rig-load phases): arrival times and what identifies each telegram.
    telegram_at: dict[tuple[str, str], int] = field(default_factory=dict)
    """Gateway: (variant, seq) -> arrival ns of the decoded telegram message."""
    raw_of: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """Gateway: (variant, seq) -> the raw twin's bytes."""
    payloads: list[tuple[int, bytes]] = field(default_factory=list)
    """Baseline: (arrival ns, payload)."""


class Subscriber:
    """The holder's paho client: counts every message per side, records arrivals on demand."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.sides = {OURS_RIG: Arrivals(), BASE_RIG: Arrivals()}
        self.recording = False
        self.sys_samples: list[tuple[int, int]] = []
        """(arrival ns, PUBLISH messages the broker received since it started)."""
        self._subscribed = threading.Event()
        self._acked = threading.Condition()
        self._acks: set[int] = set()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="p1-bench-subscriber", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(HOLDER, PASSWORDS[HOLDER])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_message = self._on_message
        self.host, self.port = host, port
        # $SYS comes at QoS 0 (no PUBACK, so the subscriber's kernel delays its TCP ACK up to
        # 40 ms, and mosquitto's Nagle then holds the next message): a connection of its own.
        self.sys_client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="p1-bench-sys", protocol=mqtt.MQTTv5
        )
        self.sys_client.username_pw_set(HOLDER, PASSWORDS[HOLDER])
        self.sys_client.on_connect = self._on_sys_connect
        self.sys_client.on_message = self._on_sys_message

    def start(self, timeout: float = 15.0) -> Subscriber:
        """Connect, subscribe (QoS 1: nothing lost, counts exact), wait for the SUBACK."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the subscriber did not get its SUBACK")
        self.sys_client.connect(self.host, self.port, keepalive=30)
        self.sys_client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect."""
        for client in (self.client, self.sys_client):
            with contextlib.suppress(Exception):
                client.disconnect()
            client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Subscribe to the decoded telegrams of both rigs and to the broker's count."""
        if not rc.is_failure:
            client.subscribe(f"p1/+/slot/{HOLDER}/+/telegram", 1)

    def _on_sys_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Subscribe to the broker's count of PUBLISH messages received."""
        if not rc.is_failure:
            client.subscribe(SYS_RECEIVED, 0)

    def _on_sys_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """One $SYS sample."""
        with contextlib.suppress(ValueError):
            self.sys_samples.append((time.monotonic_ns(), int(msg.payload)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """SUBACK."""
        self._subscribed.set()
        with self._acked:
            self._acks.add(mid)
            self._acked.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """UNSUBACK."""
        with self._acked:
            self._acks.add(mid)
            self._acked.notify_all()

    def want_raw(self, on: bool, timeout: float = 10.0) -> None:
        """Also receive the gateway's raw twins (to identify each telegram), or stop that.

        Only while latency is measured: in a flood they would double the subscriber's work.
        """
        topic = f"p1/{OURS_RIG}/slot/{HOLDER}/+/raw"
        if on:
            _, mid = self.client.subscribe(topic, 1)
        else:
            _, mid = self.client.unsubscribe(topic)
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise RuntimeError("the broker did not acknowledge a (un)subscription")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """One message: count it; while recording keep what identifies it and when it came."""
        now = time.monotonic_ns()
        topic: str = msg.topic
        parts = topic.split("/")
        side = self.sides.get(parts[1])
        if side is None:
            return
        kind = parts[-1]
        if kind == "telegram":
            side.telegrams += 1
        elif kind == "raw":
            side.raws += 1
        if not self.recording:
            return
        if parts[1] == BASE_RIG:
            side.payloads.append((now, bytes(msg.payload)))
            return
        props = dict(getattr(msg.properties, "UserProperty", None) or ())
        key = (parts[-2], props.get("seq", ""))
        if kind == "telegram":
            side.telegram_at[key] = now
        elif kind == "raw":
            side.raw_of[key] = bytes(msg.payload)

    def broker_received_rate(self, t0: int, t1: int) -> float | None:
        """PUBLISH messages/s the broker took in between t0 and t1, from its $SYS counts.

        mosquitto publishes the count only when it changed, about every 1-2 s: the rate runs
        from the first to the last sample inside the window, or, when fewer than two fall
        inside, across the samples just around it.
        """
        samples = list(self.sys_samples)
        inside = [(t, v) for t, v in samples if t0 <= t <= t1]
        if len(inside) < 2:
            before = [(t, v) for t, v in samples if t <= t0]
            after = [(t, v) for t, v in samples if t >= t1]
            if not before or not after:
                return None
            inside = [before[-1], after[0]]
        (ta, va), (tb, vb) = inside[0], inside[-1]
        if tb <= ta:
            return None
        return (vb - va) / ((tb - ta) / 1e9)


# --- the two sides -------------------------------------------------------------------------


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


@dataclass
class PhaseResult:
    """The figures of one measured window."""

    side: str
    kind: str
    """"rig", "load" or "flood"."""
    seconds: float
    cpu_s: float
    rss_mb: float
    hwm_mb: float
    telegrams_out: int
    """Decoded telegram messages the subscriber received in the window."""
    sent: int
    """Telegrams the simulator queued in the window."""
    bytes_written: int
    broker_in_per_s: float | None
    """PUBLISH messages per second into mosquitto ($SYS), all clients."""
    sim_cpu_s: float
    broker_cpu_s: float
    parsed: int | None = None
    """Baseline only: telegrams it parsed in the window (its own counter)."""
    latencies_ms: list[float] = field(default_factory=list)
    unmatched: int = 0
    threads: dict[str, ThreadUse] = field(default_factory=dict)
    """CPU and context switches per thread name of the side's process over the window."""

    @property
    def cpu_percent(self) -> float:
        """CPU of the side's process, % of one core."""
        return 100 * self.cpu_s / self.seconds

    @property
    def out_per_s(self) -> float:
        """Telegrams per second out of mosquitto to the subscriber."""
        return self.telegrams_out / self.seconds

    @property
    def sent_per_s(self) -> float:
        """Telegrams per second the simulator produced."""
        return self.sent / self.seconds


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
                    print(f"  round {index + 1} {_phase_line(result)}", flush=True)

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


# --- figures -------------------------------------------------------------------------------


def _phase_line(r: PhaseResult) -> str:
    """One progress line per measured phase."""
    text = (
        f"{r.kind:5} {r.side:8} {r.seconds:5.1f} s: sent {r.sent_per_s:7.1f}/s, "
        f"out {r.out_per_s:7.1f}/s, CPU {r.cpu_percent:5.1f} %"
    )
    if r.parsed is not None and r.kind == "flood":
        text += f", parsed {r.parsed / r.seconds:7.1f}/s"
    if r.broker_in_per_s is not None and r.kind == "flood":
        text += f", broker in {r.broker_in_per_s:7.1f} msg/s"
    if r.latencies_ms:
        text += (
            f", latency p50 {percentile(r.latencies_ms, 50):.2f} ms "
            f"p99 {percentile(r.latencies_ms, 99):.2f} ms (n={len(r.latencies_ms)})"
        )
    if r.unmatched:
        text += f", {r.unmatched} unmatched"
    if r.kind == "rig" and r.threads and r.sent:
        used = sorted(r.threads.items(), key=lambda kv: -kv[1].cpu_s)
        text += "\n      threads (CPU %, wake-ups per telegram): " + ", ".join(
            f"{name} {100 * use.cpu_s / r.seconds:.2f} % {use.switches / r.sent:.1f}"
            for name, use in used
            if use.cpu_s or use.switches
        )
    return text


@dataclass(frozen=True, slots=True)
class Paced:
    """One side's figures over its phases of one paced kind (rig or load), pooled."""

    rate: float
    """Telegrams/s received."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    unmatched: int
    cpu_percent: float
    cpu_us_per_telegram: float


@dataclass(frozen=True, slots=True)
class Flood:
    """One side's flood figures: medians over the rounds (CPU per telegram pooled)."""

    into: float | None
    """Telegrams/s into mosquitto."""
    best_into: float | None
    """The same in the side's best round: the baseline's swings between rounds (its paho thread
    is starved by its 32 reader threads in some rounds, not in others)."""
    out: float
    sent: float
    parsed: float | None
    cpu_percent: float
    cpu_us_per_telegram: float | None
    sim_cpu_percent: float
    broker_cpu_percent: float


@dataclass(frozen=True, slots=True)
class Summary:
    """One side's figures over the run."""

    idle_cpu_percent: float | None
    """CPU with no telegrams at all (every rig paused)."""
    rig: Paced | None
    load: Paced | None
    flood: Flood | None
    rss_rig_mb: float
    """VmRSS at the end of the side's first rig-load phase (before any load or flood)."""
    hwm_mb: float
    """VmHWM at the end of the side's last phase: the peak over the run."""


def _paced(phases: list[PhaseResult]) -> Paced | None:
    """Pool rig-load or load phases."""
    if not phases:
        return None
    latencies = [ms for r in phases for ms in r.latencies_ms]
    seconds = sum(r.seconds for r in phases)
    received = sum(r.telegrams_out for r in phases)
    cpu = sum(r.cpu_s for r in phases)
    return Paced(
        rate=received / seconds,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies) if latencies else float("nan"),
        samples=len(latencies),
        unmatched=sum(r.unmatched for r in phases),
        cpu_percent=100 * cpu / seconds,
        cpu_us_per_telegram=1e6 * cpu / received if received else float("nan"),
    )


def summarize(
    results: list[PhaseResult], side: str, per_telegram: int, idle: float | None = None
) -> Summary:
    """Pool one side's phases (`idle`: its CPU % with no telegrams, if measured)."""
    mine = [r for r in results if r.side == side]
    rigs = [r for r in mine if r.kind == "rig"]
    floods = [r for r in mine if r.kind == "flood"]
    flood = None
    if floods:
        seconds = sum(r.seconds for r in floods)
        delivered = sum(r.telegrams_out for r in floods)
        ins = [r.broker_in_per_s / per_telegram for r in floods if r.broker_in_per_s is not None]
        parsed = [r.parsed / r.seconds for r in floods if r.parsed is not None]
        flood = Flood(
            into=statistics.median(ins) if ins else None,
            best_into=max(ins) if ins else None,
            out=statistics.median(r.out_per_s for r in floods),
            sent=statistics.median(r.sent_per_s for r in floods),
            parsed=statistics.median(parsed) if parsed else None,
            cpu_percent=statistics.median(r.cpu_percent for r in floods),
            cpu_us_per_telegram=1e6 * sum(r.cpu_s for r in floods) / delivered
            if delivered
            else None,
            sim_cpu_percent=100 * sum(r.sim_cpu_s for r in floods) / seconds,
            broker_cpu_percent=100 * sum(r.broker_cpu_s for r in floods) / seconds,
        )
    return Summary(
        idle_cpu_percent=idle,
        rig=_paced(rigs),
        load=_paced([r for r in mine if r.kind == "load"]),
        flood=flood,
        rss_rig_mb=rigs[0].rss_mb if rigs else float("nan"),
        hwm_mb=mine[-1].hwm_mb if mine else float("nan"),
    )


def _num(value: float | None, digits: int = 1) -> str:
    """A figure, or '-' when not measured."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _ratio(ours: float | None, base: float | None, higher_is_better: bool) -> str:
    """How many times better ours is ('-' when either is missing)."""
    if ours is None or base is None or not ours > 0 or not base > 0:
        return "-"
    return f"{(ours / base if higher_is_better else base / ours):.1f}x"


def _get(obj: Any, path: str) -> float | None:
    """A dotted attribute of a summary, None where a part is missing."""
    for name in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, name)
    return None if obj is None else float(obj)


#: Report rows: label, Summary attribute path, higher is better, digits.
ROWS: list[tuple[str, str, bool, int]] = [
    ("idle (no telegrams): CPU, % of one core", "idle_cpu_percent", False, 2),
    ("rig load: telegrams/s received", "rig.rate", True, 1),
    ("rig load: latency p50, ms", "rig.p50_ms", False, 2),
    ("rig load: latency p99, ms", "rig.p99_ms", False, 2),
    ("rig load: latency max, ms", "rig.max_ms", False, 2),
    ("rig load: CPU, % of one core", "rig.cpu_percent", False, 2),
    ("rig load: CPU us per telegram", "rig.cpu_us_per_telegram", False, 0),
    ("load: telegrams/s received", "load.rate", True, 1),
    ("load: latency p50, ms", "load.p50_ms", False, 2),
    ("load: latency p99, ms", "load.p99_ms", False, 2),
    ("load: CPU, % of one core", "load.cpu_percent", False, 1),
    ("load: CPU us per telegram", "load.cpu_us_per_telegram", False, 0),
    ("flood: telegrams/s into mosquitto", "flood.into", True, 1),
    ("flood: the same, best round", "flood.best_into", True, 1),
    ("flood: telegrams/s out to the subscriber", "flood.out", True, 1),
    ("flood: simulator output, telegrams/s", "flood.sent", True, 1),
    ("flood: telegrams/s parsed (baseline's count)", "flood.parsed", True, 1),
    ("flood: CPU, % of one core", "flood.cpu_percent", False, 1),
    ("flood: CPU us per telegram delivered", "flood.cpu_us_per_telegram", False, 0),
    ("flood: simulator thread CPU, %", "flood.sim_cpu_percent", False, 1),
    ("flood: mosquitto CPU, %", "flood.broker_cpu_percent", False, 1),
    ("RSS at rig load (VmRSS), MB", "rss_rig_mb", False, 1),
    ("peak RSS over the run (VmHWM), MB", "hwm_mb", False, 1),
]


def report(
    ours: Summary, base: Summary | None, problems: list[str], other: str = "field"
) -> list[str]:
    """The figures table (ratio: how many times better the gateway is) and the targets.

    `other`: which `--baseline` ran. The column is headed by it unless it is the field's
    baseline, and the ratio target is only taken against that one (a floor is no rival).
    """
    column = "baseline" if other == "field" else other
    lines = [f"{'':46} {'gateway':>10} {column:>10} {'ratio':>7}"]
    for label, path, higher, digits in ROWS:
        mine, theirs = _get(ours, path), _get(base, path)
        if mine is None and theirs is None:
            continue
        lines.append(
            f"{label:46} {_num(mine, digits):>10} {_num(theirs, digits):>10} "
            f"{_ratio(mine, theirs, higher):>7}"
        )
    for kind in ("rig", "load"):
        mine_p: Paced | None = getattr(ours, kind)
        theirs_p: Paced | None = None if base is None else getattr(base, kind)
        if mine_p is not None:
            text = (
                f"{kind} latency samples: gateway {mine_p.samples} ({mine_p.unmatched} unmatched)"
            )
            if theirs_p is not None:
                text += f", {column} {theirs_p.samples} ({theirs_p.unmatched} unmatched)"
            lines.append(text)
    flood_ratio = None
    base_best = _get(base, "flood.best_into")  # the baseline at its best: the fair comparison
    ours_into = _get(ours, "flood.into")
    if ours_into is not None and base_best and other == "field":
        flood_ratio = ours_into / base_best
    checks: list[tuple[str, float | None, float, bool]] = [
        (f"flood into mosquitto >= {TARGET_RATE:.0f} telegrams/s", ours_into, TARGET_RATE, True),
        (
            f"flood >= {TARGET_RATIO:.0f}x the baseline's best round",
            flood_ratio,
            TARGET_RATIO,
            True,
        ),
        (
            f"p99 latency at rig load <= {TARGET_P99_MS:.0f} ms",
            _get(ours, "rig.p99_ms"),
            TARGET_P99_MS,
            False,
        ),
        (
            f"CPU at rig load <= {TARGET_CPU_PERCENT:.0f} % of one core",
            _get(ours, "rig.cpu_percent"),
            TARGET_CPU_PERCENT,
            False,
        ),
        (f"RSS at rig load <= {TARGET_RSS_MB:.0f} MB", ours.rss_rig_mb, TARGET_RSS_MB, False),
        (f"peak RSS over the run <= {TARGET_RSS_MB:.0f} MB", ours.hwm_mb, TARGET_RSS_MB, False),
    ]
    lines.append("targets (gateway):")
    for label, value, limit, at_least in checks:
        if value is None or value != value:  # not measured (or NaN)
            verdict = "not measured"
        else:
            met = value >= limit if at_least else value <= limit
            verdict = f"{'met' if met else 'MISSED'} ({value:.2f})"
        lines.append(f"  {label:46} {verdict}")
    for problem in problems:
        lines.append(f"problem: {problem}")
    return lines


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
                        "gateway": _plain(ours),
                        "baseline": None if base is None else _plain(base),
                        "phases": [_phase_dict(r) for r in bench.results],
                        "problems": bench.problems,
                    },
                    indent=2,
                )
            )
    for line in report(ours, base, bench.problems, args.baseline):
        print(line)
    return 0


def _plain(value: Any) -> Any:
    """A summary (nested frozen dataclasses) as JSON-able data."""
    if hasattr(value, "__slots__") and hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def _phase_dict(r: PhaseResult) -> dict[str, Any]:
    """A phase's figures without its latency samples (their percentiles instead)."""
    return {
        "side": r.side,
        "kind": r.kind,
        "seconds": r.seconds,
        "cpu_percent": r.cpu_percent,
        "rss_mb": r.rss_mb,
        "hwm_mb": r.hwm_mb,
        "sent_per_s": r.sent_per_s,
        "out_per_s": r.out_per_s,
        "parsed": r.parsed,
        "broker_in_msgs_per_s": r.broker_in_per_s,
        "bytes_written": r.bytes_written,
        "sim_cpu_s": r.sim_cpu_s,
        "broker_cpu_s": r.broker_cpu_s,
        "latency_p50_ms": percentile(r.latencies_ms, 50) if r.latencies_ms else None,
        "latency_p99_ms": percentile(r.latencies_ms, 99) if r.latencies_ms else None,
        "latency_samples": len(r.latencies_ms),
        "unmatched": r.unmatched,
    }
