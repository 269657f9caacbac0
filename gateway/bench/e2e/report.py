"""The figures of `bench e2e`: per measured window, pooled per side, the table and the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from gateway.bench.e2e.procstats import ThreadUse

#: The issue's targets.
TARGET_RATE = 3000.0
TARGET_RATIO = 10.0
TARGET_P99_MS = 5.0
TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MB = 60.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, linear between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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


def phase_line(r: PhaseResult) -> str:
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


def plain(value: Any) -> Any:
    """A summary (nested frozen dataclasses) as JSON-able data."""
    if hasattr(value, "__slots__") and hasattr(value, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def phase_dict(r: PhaseResult) -> dict[str, Any]:
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
