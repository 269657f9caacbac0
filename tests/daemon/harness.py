"""A whole gateway for tests: a real mosquitto, a virtual rig on ptys, the daemon as a process.

The daemon runs as `python -m gateway run` with NOTIFY_SOCKET pointing at a datagram socket
this harness binds (systemd's side of sd_notify), so tests see exactly what systemd would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.devkit.files import slots_toml, write_gateway_files
from gateway.sim.catalogue import MeterModel, catalogue
from gateway.sim.rig import VirtualRig
from tests.support.mosquitto import MosquittoBroker, MqttProbe, wait_until

RIG_ID = "rig-a"
PASSWORDS = {"rig-a": "rig-secret", "acme": "acme-secret", "beta": "beta-secret"}


class NotifySocket:
    """systemd's end of sd_notify: a bound datagram socket collecting every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._reading = threading.Event()
        self._reading.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Collect datagrams until closed."""
        while not self._stop:
            if not self._reading.wait(0.2):
                continue
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def pause(self) -> None:
        """Stop reading, as a stuck systemd would: the socket's receive queue fills up."""
        self._reading.clear()

    def resume(self) -> None:
        """Read again."""
        self._reading.set()

    def having(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        """The messages that set `key` (to `value`, when given)."""
        return [
            m for _, m in list(self.messages) if key in m and (value is None or m[key] == value)
        ]

    def close(self) -> None:
        """Stop collecting."""
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class GatewayHarness:
    """Broker + virtual rig + daemon process + a notify socket + a tester probe."""

    def __init__(
        self,
        models: Iterable[MeterModel] | None = None,
        *,
        watchdog_usec: int | None = 1_000_000,
        slots: list[tuple[str, datetime, datetime]] | None = None,
        batch_interval: float = 0.2,
        log_format: str = "json",
        wrap: list[str] | None = None,
        schedule_source: str = "file",
        broker: MosquittoBroker | None = None,
        rig_password: str = PASSWORDS[RIG_ID],
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="p1gw-daemon-"))
        cat = catalogue()
        self.models = list(models or (cat["fluvius-t211"], cat["iskra-am550-dsmr50"]))
        now = datetime.now(UTC)
        self.slots = slots or [("acme", now - timedelta(hours=1), now + timedelta(hours=2))]
        self.watchdog_usec = watchdog_usec
        self.batch_interval = batch_interval
        self.log_format = log_format
        self.schedule_source = schedule_source
        """"mqtt": the gateway follows the lab's schedule on the broker (slots.toml unread)."""
        self.wrap = wrap or []
        """A command the daemon's command line is appended to (a namespace, say)."""
        self.broker = broker or MosquittoBroker(PASSWORDS, rigs=[RIG_ID])
        """The broker the gateway publishes to (started and closed with the harness)."""
        self.rig_password = rig_password
        self.rig = VirtualRig(self.models, link_dir=self.dir / "ports")
        self.notify: NotifySocket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "gateway.toml"
        self.variants_file = self.dir / "variants.toml"
        self.slots_file = self.dir / "slots.toml"
        self.status_file = self.dir / "run" / "status.json"
        self.log_file = self.dir / "gateway.log"

    # --- set-up -------------------------------------------------------------------------------

    def write_config(self) -> None:
        """The gateway's three config files, pointing at this harness's broker and rig."""
        write_gateway_files(
            self.dir,
            rig=RIG_ID,
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            password=self.rig_password,
            variants_toml=self.rig.variants_toml(),
            slots=self.slots,
            spool_batch_interval=self.batch_interval,
            status_interval=0.5,
            log_format=self.log_format,
            log_level="debug",
            comment="a test's gateway (tests/daemon/harness.py)",
            schedule_source=self.schedule_source,
        )

    def write_slots(self, slots: list[tuple[str, datetime, datetime]]) -> None:
        """Rewrite the slots file."""
        self.slots_file.write_text(slots_toml(slots))

    def start(self) -> GatewayHarness:
        """Start broker, rig and daemon; return once the daemon said READY=1."""
        self.broker.start()
        self.rig.start()
        self.write_config()
        self.notify = NotifySocket(self.dir / "notify.sock")
        self.start_daemon()
        return self

    def start_daemon(self) -> None:
        """Start (or restart) the daemon process and wait for READY=1."""
        assert self.notify is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("P1GW_")}
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env.pop("JOURNAL_STREAM", None)
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        else:
            env.pop("WATCHDOG_USEC", None)
        readies = len(self.notify.having("READY", "1"))
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        ok = wait_until(
            lambda: len(self.notify.having("READY", "1")) > readies or self.proc.poll() is not None,
            30,
        )
        if not ok or self.proc.poll() is not None:
            raise RuntimeError(f"daemon did not become ready:\n{self.log()}")

    # --- use ----------------------------------------------------------------------------------

    def probe(self, user: str, topics: list[str], **kw: Any) -> MqttProbe:
        """A started tester client."""
        return MqttProbe(self.broker, user, PASSWORDS[user], topics, **kw).start()

    def signal(self, sig: int) -> None:
        """Send a real signal to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop_daemon(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM the daemon; return its exit code and how long it took to exit."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def status(self) -> dict[str, Any]:
        """The daemon's status file."""
        return dict(json.loads(self.status_file.read_text()))

    def last_reload_ok(self) -> bool | None:
        """Whether the daemon's last reload was applied (None: no reload yet)."""
        last = self.status()["config"]["last_reload"]
        return None if last is None else bool(last["ok"])

    def log(self) -> str:
        """The daemon's output so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines, parsed."""
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def close(self) -> None:
        """Stop everything and remove the folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.rig.stop()
        self.broker.close()
        if self.notify is not None:
            self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GatewayHarness:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
