"""The newcomer's demo: a virtual rig, a private broker, the gateway, and a tester's view.

`./scripts/demo` runs this after the set-up. Everything lives in a temporary folder and on
free loopback ports; nothing touches the machine's own broker or serial ports. The gateway
runs as the real daemon (`python -m gateway run`), reading every simulated meter through its
pseudo-terminal; the tester subscribes with its own credentials to its slot's topics and
prints each decoded telegram until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.devkit.files import write_gateway_files
from gateway.devkit.mosquitto import MosquittoBroker, MqttProbe, Received
from gateway.sim.catalogue import DEFAULT_RIG
from gateway.sim.rig import VirtualRig

RIG = "demo-rig"
TESTER = "demo-tester"
RIVAL = "demo-rival"
PASSWORDS = {RIG: "rig-secret", TESTER: "tester-secret", RIVAL: "rival-secret"}

#: The readings the demo prints of each telegram, when present (OBIS code: short label).
HIGHLIGHTS = {
    "1-0:1.8.1": "T1",
    "1-0:1.8.2": "T2",
    "1-0:1.8.0": "total",
    "1-0:1.7.0": "P+",
    "1-0:2.7.0": "P-",
    "1-0:32.7.0": "U1",
}


def demo_slot(now: datetime) -> tuple[str, datetime, datetime]:
    """One slot, held by the demo tester, around now."""
    start = (now - timedelta(hours=1)).replace(microsecond=0)
    return (TESTER, start, start + timedelta(hours=23))


def summarise(payload: Mapping[str, Any]) -> str:
    """One line for a decoded telegram: variant, seq, meter time and a few readings."""
    objects: Mapping[str, Mapping[str, Any]] = payload.get("objects", {})
    parts = []
    for code, label in HIGHLIGHTS.items():
        obj = objects.get(code)
        if obj is not None and obj.get("value") is not None:
            unit = obj.get("unit") or ""
            parts.append(f"{label}={obj['value']}{unit and ' ' + unit}")
    meter_time = payload.get("meter_time") or "-"
    return (
        f"{payload.get('variant', '?'):<24} seq {payload.get('seq', '?'):>5}  "
        f"meter {meter_time:<25} {len(objects):>2} objects  " + "  ".join(parts)
    )


class TesterView:
    """Prints each telegram the tester receives on its slot's topics."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.count = 0
        self._seen = 0
        self._lock = threading.Lock()

    def drain(self, probe: MqttProbe) -> None:
        """Print what arrived since the last call."""
        messages: list[Received] = probe.snapshot()
        with self._lock:
            fresh, self._seen = messages[self._seen :], len(messages)
        for msg in fresh:
            if not msg.topic.endswith("/telegram"):
                continue
            self.count += 1
            try:
                self.write(summarise(json.loads(msg.payload)))
            except ValueError:
                self.write(f"{msg.topic}: undecodable payload")


def gateway_command() -> str:
    """The `p1-gateway` this demo runs, by its full path (`python -m gateway` when the
    interpreter has no such script beside it)."""
    script = Path(sys.executable).parent / "p1-gateway"
    if os.access(script, os.X_OK):
        return str(script)
    return f"{sys.executable} -m gateway"


def crossed(probe: MqttProbe) -> list[str]:
    """The slot topics a tester without a slot received (none: nothing crosses)."""
    return sorted({m.topic for m in probe.snapshot() if "/slot/" in m.topic})


def run_demo(
    seconds: float | None,
    keep: bool,
    out: Callable[[str], None] = print,
    *,
    rival: bool = False,
) -> int:
    """Run the whole demo; until Ctrl-C, or for `seconds` when given. Exit code.

    `rival`: a second tester, without a slot, subscribes to everything (`p1/#`) beside the
    first, and the demo shows that none of the slot's messages reach it."""
    base = Path(tempfile.mkdtemp(prefix="p1-gateway-demo-"))
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = MosquittoBroker(PASSWORDS, rigs=[RIG])
    rig = VirtualRig(DEFAULT_RIG, link_dir=base / "ports")
    daemon: subprocess.Popen[bytes] | None = None
    probe: MqttProbe | None = None
    rival_probe: MqttProbe | None = None
    try:
        out(f"demo: working folder {base}")
        broker.start()
        out(f"demo: private mosquitto on 127.0.0.1:{broker.port} (config {broker.conf})")
        rig.start()
        out(f"demo: virtual rig with {len(rig.meters)} meters on pseudo-terminals in {base}/ports")
        config = write_gateway_files(
            base,
            rig=RIG,
            broker_host=broker.host,
            broker_port=broker.port,
            password=PASSWORDS[RIG],
            variants_toml=rig.variants_toml(),
            slots=[demo_slot(datetime.now(UTC))],
            log_format="console",
            comment="p1-gateway demo configuration (written by scripts/demo)",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("P1GW_")}
        log = (base / "gateway.log").open("ab")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        out(f"demo: gateway running (pid {daemon.pid}, log {base}/gateway.log)")
        out(f"demo: status table any time: {gateway_command()} status --config {config}")
        topic = f"p1/{RIG}/slot/{TESTER}/#"
        probe = MqttProbe(broker, TESTER, PASSWORDS[TESTER], [topic]).start()
        out(f"demo: tester login: user {TESTER}, password {PASSWORDS[TESTER]}; to listen too:")
        out(
            f"  mosquitto_sub -h {broker.host} -p {broker.port} -u {TESTER} "
            f"-P {PASSWORDS[TESTER]} -t '{topic}' -v"
        )
        if rival:
            rival_probe = MqttProbe(broker, RIVAL, PASSWORDS[RIVAL], ["p1/#"]).start()
            out(
                f"demo: rival tester '{RIVAL}' (password {PASSWORDS[RIVAL]}, no slot) "
                "subscribed to p1/#: it may read the rig's public state, never the slot"
            )
        out(f"demo: tester '{TESTER}' subscribed to {topic}; telegrams follow (Ctrl-C stops)\n")
        view = TesterView(out)
        deadline = None if seconds is None else time.monotonic() + seconds
        while not stop.is_set():
            if daemon.poll() is not None:
                out(f"demo: the gateway exited with {daemon.returncode}; see {base}/gateway.log")
                return 1
            view.drain(probe)
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
        view.drain(probe)
        out(f"\ndemo: {view.count} telegrams shown; stopping")
        if rival_probe is not None:
            leaked = crossed(rival_probe)
            public = len(rival_probe.snapshot())
            if leaked:
                out(f"demo: the rival received slot messages: {', '.join(leaked)}")
                return 1
            out(f"demo: the rival received {public} public messages and none of the slot's")
        return 0 if view.count else 1
    finally:
        for client in (probe, rival_probe):
            if client is not None:
                client.stop()
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        rig.stop()
        broker.close()
        if keep:
            out(f"demo: gateway, virtual rig and broker stopped; {broker.dir} removed; kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
            out(
                "demo: cleaned up: gateway, virtual rig and broker stopped; "
                f"{base} and {broker.dir} removed"
            )


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.demo [--seconds N] [--keep] [--rival] [--lab [--day-seconds S]]`."""
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--rival",
        action="store_true",
        help="a second tester, without a slot, subscribed to p1/#: nothing of the slot reaches it",
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="the lab's demo instead, a day in a minute: a central broker with the dynamic "
        "security plugin, two rigs following their schedules, a tester booked on both",
    )
    parser.add_argument(
        "--day-seconds", type=float, default=20.0, help="with --lab: a day of test time (20 s)"
    )
    args = parser.parse_args(argv)
    if args.lab:
        from gateway.labdemo import run_lab_demo

        return run_lab_demo(args.seconds, args.keep, args.day_seconds)
    return run_demo(args.seconds, args.keep, rival=args.rival)


if __name__ == "__main__":
    sys.exit(main())
