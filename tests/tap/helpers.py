"""Helpers for the tap's tests: the tap as a process, a scripted rig, a TCP stream reader."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.devkit.mosquitto import MosquittoBroker, wait_until
from gateway.p1 import Frame, Framer

PASSWORDS = {"rig-a": "rig-secret", "acme": "acme-secret", "beta": "beta-secret"}


class TapProcess:
    """`python -m gateway tap ...` as a child process, its stderr in a file."""

    def __init__(self, folder: Path, args: list[str], name: str = "tap") -> None:
        self.log_path = folder / f"{name}.log"
        self.args = args
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "tap", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log(self) -> str:
        """What the tap said so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def said(self, text: str, times: int = 1, timeout: float = 15.0) -> bool:
        """Wait until the tap has said `text` at least `times` times (False if it exited)."""
        return wait_until(
            lambda: self.log().count(text) >= times or self.proc.poll() is not None, timeout
        ) and (self.log().count(text) >= times)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def tap_args(
    broker: MosquittoBroker, folder: Path, user: str = "acme", password: str | None = None
) -> list[str]:
    """The broker, user and password-file arguments for `user` on rig-a."""
    pw = folder / f"{user}.pass"
    pw.write_text((password if password is not None else PASSWORDS[user]) + "\n")
    return [
        "--host", broker.host, "--port", str(broker.port), "--username", user,
        "--password-file", str(pw), "--rig", "rig-a",
    ]  # fmt: skip


class RigPublisher:
    """The rig's side, scripted: raw and invalid messages as the gateway publishes them."""

    def __init__(self, broker: MosquittoBroker, user: str = "rig-a") -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"rig-script-{id(self)}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def publish(
        self, variant: str, seq: int, data: bytes, *, kind: str = "raw", holder: str = "acme"
    ) -> None:
        """Publish one message (QoS 1) and wait for the broker's PUBACK."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("seq", str(seq)), ("variant", variant)]
        if kind == "invalid":
            payload = json.dumps(
                {"rig": "rig-a", "variant": variant, "seq": seq, "reason": "crc mismatch",
                 "raw_encoding": "latin-1", "raw": data.decode("latin-1")}
            ).encode()  # fmt: skip
        else:
            payload = data
        topic = f"p1/rig-a/slot/{holder}/{variant}/{kind}"
        info = self.client.publish(topic, payload, qos=1, properties=props)
        info.wait_for_publish(10)

    def close(self) -> None:
        """Disconnect."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


class StreamReader:
    """A TCP client of a tap listener, keeping every byte with its arrival time."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), 1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(0.2)
        self._data = bytearray()
        self.arrivals: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = False
        self.closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Read until the end."""
        while not self._stop:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            with self._lock:
                self._data += chunk
                self.arrivals.append((time.monotonic(), len(self._data)))

    @property
    def data(self) -> bytes:
        """Every byte so far."""
        with self._lock:
            return bytes(self._data)

    def frames(self) -> list[bytes]:
        """The frames in the stream so far (the gateway's framer: `/` through the CRC line)."""
        return frames_of(self.data)

    def close(self) -> None:
        """Stop reading."""
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def frames_of(data: bytes) -> list[bytes]:
    """Every frame in `data`, in order (valid or not)."""
    return [e.raw for e in Framer().feed(data) if isinstance(e, Frame)]
