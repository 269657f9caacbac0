"""The lab's demo, a day in a minute: `./scripts/demo --lab`.

A central mosquitto with the dynamic security plugin, the lab beside it (`p1-gateway lab`, run
as a planner would type it), two virtual rigs each read by a real gateway that follows its
schedule from the broker (`[schedule] source = "mqtt"`), and a tester logged in with the
access code the lab gave it. The lab's day is `--day-seconds` long (its `slot_hours` a
fraction): the tester's booking starts a few seconds after it is made, and its telegrams start
and stop with the slot. Everything lives in a temporary folder and on free loopback ports, and
is removed at the end.
"""

from __future__ import annotations

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from gateway.devkit.central import CentralBroker
from gateway.devkit.files import write_gateway_files
from gateway.devkit.mosquitto import MqttProbe, Received
from gateway.sim.catalogue import catalogue
from gateway.sim.rig import VirtualRig

RIGS = ("demo-rig-a", "demo-rig-b")
TESTER = "demo-tester"
PLANNER = ("planner", "planner-secret")
#: Each rig's meters (one-second ones, so that telegrams show at once).
METERS = {RIGS[0]: ("fluvius-t211",), RIGS[1]: ("iskra-am550-dsmr50",)}
#: Seconds from the booking to the slot's start.
LEAD_S = 6.0


def _lab_toml(folder: Path, port: int, day_s: float) -> Path:
    """LAB.toml for the demo: days of `day_s` seconds, no turnover or notice to wait for."""
    (folder / "planner.pass").write_text(PLANNER[1] + "\n")
    path = folder / "lab.toml"
    path.write_text(
        f"""# the demo's lab (written by ./scripts/demo --lab)
[lab]
db = "lab.sqlite"
zone = "Europe/Brussels"
rigs = {json.dumps(list(RIGS))}
slot_hours = {day_s / 3600!r}   # a day of test time is {day_s:g} s
turnover_hours = 0
notice_days = 0

[mqtt]
host = "127.0.0.1"
port = {port}
username = "{PLANNER[0]}"
password_file = "planner.pass"
"""
    )
    return path


class LabDemo:
    """The demo's parts and what it prints; `run` does it all."""

    def __init__(self, day_s: float, out: Callable[[str], None]):
        self.day_s = day_s
        self.out = out
        self.base = Path(tempfile.mkdtemp(prefix="p1-gateway-lab-demo-"))
        self.central = CentralBroker(*PLANNER)
        self.rigs = {
            rig: VirtualRig(
                [catalogue()[m] for m in METERS[rig]], link_dir=self.base / rig / "ports"
            )
            for rig in RIGS
        }
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.lab_config = _lab_toml(self.base, self.central.port, day_s)
        self._seen = 0

    def lab(self, *args: str) -> str:
        """Run one `p1-gateway lab` command as a planner would; print it and what it says."""
        self.out(f"$ p1-gateway lab --config lab.toml {' '.join(args)}")
        command = [sys.executable, "-m", "gateway", "lab", "--config", str(self.lab_config)]
        done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
        for line in (done.stdout + done.stderr).splitlines():
            self.out(f"  {line}")
        if done.returncode != 0:
            raise RuntimeError(f"lab {args[0]} failed ({done.returncode})")
        return done.stdout.rstrip("\n").rsplit("\n", 1)[-1]

    def start_gateway(self, rig: str, password: str) -> None:
        """The rig's gateway, logged in to the central broker as the rig, following the lab."""
        folder = self.base / rig
        config = write_gateway_files(
            folder,
            rig=rig,
            broker_host=self.central.host,
            broker_port=self.central.port,
            password=password,
            variants_toml=self.rigs[rig].variants_toml(),
            slots=[],
            log_format="console",
            comment=f"{rig}: the lab demo's gateway, following its schedule from the broker",
            schedule_source="mqtt",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("P1GW_")}
        with (folder / "gateway.log").open("ab") as log:
            self.daemons[rig] = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.out(
            f'demo: {rig}: gateway running ([schedule] source = "mqtt"), log {rig}/gateway.log'
        )

    def show(self, probe: MqttProbe) -> tuple[set[str], set[str]]:
        """Print what the tester received since the last call; the rigs whose session ended,
        and those it got telegrams from."""
        messages: list[Received] = probe.snapshot()
        for msg in messages[self._seen :]:
            levels = msg.topic.split("/")  # p1 / rig / slot / holder / [variant /] kind
            rig, kind = levels[1], levels[-1]
            if kind not in ("session", "schedule", "telegram"):
                continue  # raw bytes and invalid frames: not shown here
            data = json.loads(msg.payload)
            if kind == "session":
                slot = data["slot"]
                self.out(
                    f"tester: {rig}: session {data['event']}: slot {slot['start']} to {slot['end']}"
                )
            elif kind == "schedule":
                spans = ", ".join(f"{s['start']} to {s['end']}" for s in data.get("slots", []))
                self.out(f"tester: {rig}: my slots: {spans or '(none)'}")
            elif kind == "telegram":
                obj = data["objects"].get("1-0:1.8.1") or data["objects"].get("1-0:1.8.0") or {}
                self.out(
                    f"tester: {rig}: {data['variant']} seq {data['seq']} received "
                    f"{data['received_at']}  T1={obj.get('value')} {obj.get('unit') or ''}"
                )
        self._seen = len(messages)
        ended, flowing = set(), set()
        for msg in messages:
            rig = msg.topic.split("/")[1]
            if msg.topic.endswith("/session") and json.loads(msg.payload)["event"] == "end":
                ended.add(rig)
            elif msg.topic.endswith("/telegram"):
                flowing.add(rig)
        return ended, flowing

    def run(self, stop: threading.Event, seconds: float | None) -> int:
        """The whole demo; its exit code (0: the tester's slot came and went on both rigs)."""
        self.out(f"demo: working folder {self.base}")
        self.central.start()
        self.out(
            f"demo: central mosquitto with the dynamic security plugin on "
            f"127.0.0.1:{self.central.port} (admin: {PLANNER[0]})"
        )
        passwords = {rig: self.lab("rigs", "add", rig) for rig in RIGS}
        until = (datetime.now(UTC) + timedelta(days=365)).date().isoformat()
        code = self.lab("testers", "add", TESTER, "--until", until)
        for rig, meters in METERS.items():
            self.rigs[rig].start()
            self.out(f"demo: {rig}: virtual rig with {', '.join(meters)}")
            self.start_gateway(rig, passwords[rig])
        topic = f"p1/+/slot/{TESTER}/#"
        probe = MqttProbe(self.central, TESTER, code, [topic]).start()
        self.out(f"demo: tester {TESTER} logged in with its access code, subscribed to {topic}")
        self.out(f"demo: a day of test time is {self.day_s:g} s; booking both rigs from now on")
        start = (datetime.now(UTC) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
        self.lab("book", TESTER, "--rig", RIGS[0], "--start", start.isoformat())
        self.lab("book", TESTER, "--rig", "any", "--start", start.isoformat())
        self.out(f"demo: the slots start at {start.isoformat()}; nothing reaches the tester before")
        deadline = None if seconds is None else time.monotonic() + seconds
        ended: set[str] = set()
        flowing: set[str] = set()
        try:
            while not stop.is_set() and ended != set(RIGS):
                for rig, daemon in self.daemons.items():
                    if daemon.poll() is not None:
                        self.out(f"demo: {rig}: the gateway exited with {daemon.returncode}")
                        return 1
                ended, flowing = self.show(probe)
                if deadline is not None and time.monotonic() >= deadline:
                    break
                stop.wait(0.2)
            ended, flowing = self.show(probe)
        finally:
            probe.stop()
        self.lab("rigs", "list")
        self.out(f"demo: the tester's slots ended on {len(ended)} of {len(RIGS)} rigs")
        return 0 if ended == set(RIGS) and flowing == set(RIGS) else 1

    def close(self, keep: bool) -> None:
        """Stop the gateways, the rigs and the broker; remove the folder unless `keep`."""
        for daemon in self.daemons.values():
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in self.daemons.values():
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for rig in self.rigs.values():
            rig.stop()
        self.central.close()
        if keep:
            self.out(f"demo: gateways, virtual rigs and broker stopped; kept {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)
            self.out(
                "demo: cleaned up: gateways, virtual rigs and broker stopped; "
                f"{self.base} and {self.central.dir} removed"
            )


def run_lab_demo(
    seconds: float | None, keep: bool, day_s: float = 20.0, out: Callable[[str], None] = print
) -> int:
    """Run the lab's demo until both slots ended (or Ctrl-C, or `seconds`); its exit code."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    demo = LabDemo(day_s, out)
    try:
        return demo.run(stop, seconds)
    finally:
        demo.close(keep)
