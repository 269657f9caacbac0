"""A real mosquitto for tests, from the project's own config/mosquitto templates, plus a client.

`MosquittoBroker` renders `config/mosquitto/p1-gateway.conf.template` and `acl` into a private
folder, makes a password file with `mosquitto_passwd`, and runs `/usr/sbin/mosquitto` on a free
loopback port (never the machine's own broker). Run as root (as CI is), mosquitto drops to the
user `mosquitto`: the folder, its files and the persistence folder are then handed to that user.
`kill()` / `terminate()` and `start()` again simulate outages on the same port and state.

`MqttProbe` is a paho client for the tester's side: subscribe, collect, wait, try to publish.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "config" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
OPENSSL = shutil.which("openssl")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class MosquittoBroker:
    """One private mosquitto process with the project's config, users and ACL."""

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        rigs: Iterable[str] = ("rig-a",),
        extra_acl: str = "",
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: bool = False,
        extra_config: str = "",
    ):
        self.users = dict(users)
        self.extra_config = extra_config
        self.rigs = tuple(rigs)
        self.extra_acl = extra_acl
        self.host = host
        self.port = port or free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix="p1gw-mosquitto-"))
        self.config_dir = self.dir / "etc"
        self.state_dir = self.dir / "state"
        self.conf = self.config_dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.tls_port: int | None = free_port(host) if tls else None
        self.ca_file = self.dir / "ca.crt"
        try:
            self._render()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # --- set-up ------------------------------------------------------------------------

    def _render(self) -> None:
        """Write config, ACL and password file from the templates; hand them to `mosquitto`."""
        self.config_dir.mkdir()
        self.state_dir.mkdir()
        template = string.Template((TEMPLATE_DIR / "p1-gateway.conf.template").read_text())
        self.conf.write_text(
            template.substitute(
                config_dir=self.config_dir,
                state_dir=self.state_dir,
                port=self.port,
                bind_address=self.host,
            )
        )
        acl = (TEMPLATE_DIR / "acl").read_text()
        for rig in self.rigs:
            if f"\nuser {rig}\n" not in acl:
                acl += f"\nuser {rig}\ntopic write p1/{rig}/#\ntopic read p1/{rig}/schedule\n"
        if self.extra_acl:
            acl += "\n" + self.extra_acl.strip() + "\n"
        (self.config_dir / "acl").write_text(acl)
        if self.tls_port is not None:
            self._make_certificates()
            with self.conf.open("a") as fh:
                fh.write(
                    f"\n# Added by the test fixture: a TLS listener signed by a throwaway CA.\n"
                    f"listener {self.tls_port} {self.host}\n"
                    f"certfile {self.config_dir / 'server.crt'}\n"
                    f"keyfile {self.config_dir / 'server.key'}\n"
                )
        if self.extra_config:
            with self.conf.open("a") as fh:
                fh.write(f"\n# Added by the test fixture.\n{self.extra_config.strip()}\n")
        passwd = self.config_dir / "passwd"
        passwd.touch()
        for user, password in self.users.items():
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        self._hand_over()

    def _make_certificates(self) -> None:
        """A throwaway CA (ca_file) and a server certificate for 127.0.0.1 / localhost."""
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        etc = self.config_dir

        if OPENSSL is None:
            raise RuntimeError("openssl is needed for a TLS test broker")
        openssl = OPENSSL

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, cwd=self.dir)

        run(
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(self.dir / "ca.key"),
            "-out",
            str(self.ca_file),
            "-days",
            "2",
            "-subj",
            "/CN=p1gw-test-ca",
        )
        run(
            "req",
            *ec,
            "-keyout",
            str(etc / "server.key"),
            "-out",
            str(self.dir / "server.csr"),
            "-subj",
            "/CN=localhost",
        )
        ext = self.dir / "san.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run(
            "x509",
            "-req",
            "-in",
            str(self.dir / "server.csr"),
            "-CA",
            str(self.ca_file),
            "-CAkey",
            str(self.dir / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(etc / "server.crt"),
        )

    def _hand_over(self) -> None:
        """As root, give the broker's folder to the user mosquitto drops to."""
        if os.geteuid() != 0:
            return
        try:
            entry = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        os.chmod(self.dir, 0o755)
        for path in [self.dir, *self.dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.config_dir / "passwd", 0o600)

    # --- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> MosquittoBroker:
        """Start mosquitto and wait until it accepts connections."""
        if self.running:
            return self
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.starts += 1

        def listening() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                return True  # exited: stop waiting, reported below
            try:
                socket.create_connection((self.host, self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_until(listening, timeout)
        if not self.running:
            raise RuntimeError(f"mosquitto did not start:\n{self.log()}")
        return self

    @property
    def running(self) -> bool:
        """Is the broker process alive?"""
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int, timeout: float) -> None:
        """Send `sig` and wait for the process to end (SIGKILL after `timeout`)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop with SIGTERM: the broker saves its persistent sessions and exits."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop with SIGKILL: a crash; nothing saved since the last autosave."""
        self._signal(signal.SIGKILL, 5.0)

    def log(self) -> str:
        """The broker's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the broker and delete its folder."""
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Received:
    """One message a probe received."""

    topic: str
    payload: bytes
    retain: bool
    at: float
    user_properties: tuple[tuple[str, str], ...] = ()
    expiry: int | None = None
    """The MQTT 5 message expiry interval left, s (None: the message does not expire)."""

    def prop(self, name: str) -> str | None:
        """The first MQTT 5 user property called `name`, if any."""
        return next((v for k, v in self.user_properties if k == name), None)


class MqttProbe:
    """A tester-side paho client: subscribes, collects everything, can try to publish."""

    def __init__(
        self,
        broker: MosquittoBroker,
        username: str,
        password: str,
        topics: Sequence[str] = (),
        *,
        client_id: str | None = None,
        persistent: bool = False,
        qos: int = 1,
    ):
        self.broker = broker
        self.topics = tuple(topics)
        self.qos = qos
        self.persistent = persistent
        self.messages: list[Received] = []
        self.acks: dict[int, tuple[int, bool]] = {}
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{username}-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Subscribe (again) on every connect."""
        if rc.is_failure:
            return
        self.connects += 1
        if self.topics:
            client.subscribe([(t, self.qos) for t in self.topics])
        else:
            self._subscribed.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        """SUBACK: ready to receive."""
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        """Collect."""
        properties = getattr(msg, "properties", None)
        props = getattr(properties, "UserProperty", None) or []
        expiry = getattr(properties, "MessageExpiryInterval", None)
        received = Received(
            msg.topic,
            bytes(msg.payload),
            bool(msg.retain),
            time.monotonic(),
            tuple((str(k), str(v)) for k, v in props),
            None if expiry is None else int(expiry),
        )
        with self._lock:
            self.messages.append(received)

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        """Record the broker's answer to our own publishes."""
        self.acks[mid] = (int(rc.value), bool(rc.is_failure))

    def start(self, timeout: float = 10.0) -> MqttProbe:
        """Connect, subscribe and wait for the SUBACK."""
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        self.client.connect(
            self.broker.host,
            self.broker.port,
            keepalive=10,
            clean_start=not self.persistent,
            properties=props,
        )
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("probe did not subscribe in time")
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self, topic_filter: Callable[[str], bool] | None = None) -> list[Received]:
        """The messages received so far (optionally those whose topic passes the filter)."""
        with self._lock:
            msgs = list(self.messages)
        return [m for m in msgs if topic_filter is None or topic_filter(m.topic)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        """Wait until `predicate(messages)` holds; its last value."""
        return wait_until(lambda: predicate(self.snapshot()), timeout)

    def try_publish(
        self, topic: str, payload: bytes, timeout: float = 5.0, *, retain: bool = False
    ) -> tuple[int, bool]:
        """Publish QoS 1; the broker's (reason code, is_failure), (-1, True) when unanswered."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.acks, timeout)
        return self.acks.get(info.mid, (-1, True))

    def __enter__(self) -> MqttProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
