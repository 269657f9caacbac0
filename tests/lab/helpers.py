"""Running `p1-gateway lab` in tests: a LAB.toml, the command in-process, MQTT clients."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import main
from gateway.devkit.mosquitto import MosquittoBroker, MqttProbe, wait_until

PLANNER = "planner"
PLANNER_PASSWORD = "planner-secret"
#: A year far enough ahead that every booking made in it is in the future.
YEAR = datetime.now(UTC).year + 3


def last_sunday(year: int, month: int) -> date:
    """The last Sunday of a month: Europe's DST changes happen on it."""
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


@dataclass(frozen=True, slots=True)
class Result:
    """One lab command's exit code, stdout and stderr."""

    rc: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        """The last line of stdout (where passwords and access codes stand alone)."""
        return self.out.rstrip("\n").rsplit("\n", 1)[-1]


class Lab:
    """A LAB.toml in a folder, and `p1-gateway lab --config` it, in-process or as processes."""

    def __init__(self, folder: Path, port: int, **lab: Any):
        self.folder = folder
        self.port = port
        self.config = folder / "lab.toml"
        (folder / "planner.pass").write_text(PLANNER_PASSWORD + "\n")
        self.write(**lab)

    def write(self, **lab: Any) -> None:
        """(Re)write LAB.toml with these `[lab]` settings over the defaults."""
        settings = {"db": "lab.sqlite", "rigs": ["rig-a", "rig-b"], **lab}
        lines = ["[lab]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        lines += [
            "[mqtt]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f'username = "{PLANNER}"',
            'password_file = "planner.pass"',
            "timeout = 5",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def db(self) -> Path:
        """The store's file."""
        return self.folder / "lab.sqlite"

    def __call__(self, *args: str) -> Result:
        """Run one lab command in this process."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(["lab", "--config", str(self.config), *args])
            except SystemExit as exc:  # argparse
                rc = int(exc.code or 0)
        return Result(rc, out.getvalue(), err.getvalue())

    def process(self, *args: str) -> subprocess.Popen[str]:
        """Start one lab command as a process of its own."""
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "lab", "--config", str(self.config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )

    def ok(self, *args: str) -> Result:
        """Run a command that must succeed."""
        result = self(*args)
        assert result.rc == 0, result
        return result


def login(broker: MosquittoBroker, username: str, password: str, timeout: float = 5.0) -> int:
    """Try to log in with MQTT 5; the CONNACK's reason code (0: accepted, 135: refused)."""
    codes: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: codes.append(int(rc.value))
    client.connect(broker.host, broker.port)
    try:
        wait_until(lambda: bool(codes) or client.loop(0.05) != mqtt.MQTT_ERR_SUCCESS, timeout, 0)
    finally:
        client.disconnect()
    return codes[0] if codes else -1


def retained(broker: MosquittoBroker, topic: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The retained JSON on `topic`, read as the planner (None when there is none)."""
    with MqttProbe(broker, PLANNER, PLANNER_PASSWORD, [topic]) as probe:
        wait_until(lambda: bool(probe.snapshot()), 0.5)
        found = [m for m in probe.snapshot() if m.retain and m.topic == topic]
    return json.loads(found[-1].payload) if found else None


def wait_retained(
    broker: MosquittoBroker, topic: str, predicate: Any, timeout: float = 5.0
) -> dict[str, Any] | None:
    """Poll the retained JSON on `topic` until `predicate(it)`; its last value."""
    last: list[dict[str, Any] | None] = [None]

    def check() -> bool:
        last[0] = retained(broker, topic)
        return last[0] is not None and bool(predicate(last[0]))

    wait_until(check, timeout, interval=0.1)
    return last[0]
