"""`p1-gateway bench tap`: the tap's own share of a telegram's way, at rig load, beside a floor.

    p1-gateway bench tap [--ports 32] [--rate 1] [--seconds 20] [--outputs mixed] [--json FILE]

The share is measured from a message's receipt in paho's `on_message` to the return of the
last write of its last byte to the socket or pty (`Tap`'s observer), without `--line-rate`:
hand-off to the IO thread, dedupe, and the writes.

Set-up: a private mosquitto (the project's config and ACL), the tap in this process as
`p1-gateway tap` runs it (one IO thread, paho's thread), serving `--ports` variants of one rig
on TCP listeners, ptys, or both alternately (`mixed`, the default). A driver process
(`python -m gateway.bench.tap drive ...`, so that its work competes with the tap's for the CPU
but not for the GIL) connects to every output and reads it, and publishes as the rig does:
each variant's raw telegram (real corpus telegrams, 0.4 to 2 kB) at `--rate` per second,
QoS 1, with the `seq` and `variant` user properties, the variants staggered evenly over the
period. The first `--settle` seconds are not measured.

The floor (`--skip-floor` leaves it out): a paho subscriber whose `on_message` itself writes
each payload to its variant's output, the same kinds as the tap's (a TCP client with a blocking
`sendall`, or a pty master with a blocking `os.write`), no hand-off, no dedupe, no buffers,
timed the same way: what a tap that did nothing but write would show on this machine, now.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOLDER = "bench"
RIG = "rig-a"
PASSWORDS = {RIG: "rig-secret", HOLDER: "bench-secret"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of `bench tap`."""
    add = parser.add_argument
    add("--ports", type=int, default=32, help="variants (meters) served (default 32)")
    add("--rate", type=float, default=1.0, help="telegrams/s per variant (default 1)")
    add("--seconds", type=float, default=20.0, help="measured window, s (default 20)")
    add("--settle", type=float, default=2.0, help="s before the window (default 2)")
    add(
        "--outputs",
        choices=("tcp", "pty", "mixed"),
        default="mixed",
        help="the variants' outputs: TCP listeners, ptys, or alternately (default mixed)",
    )
    add("--skip-floor", action="store_true", help="measure the tap only")
    add("--json", metavar="FILE", help="also write the figures to FILE as JSON")


@dataclass(slots=True)
class Share:
    """What one side measured: each telegram's share in ns, and the CPU over the window."""

    label: str
    samples: list[int] = field(default_factory=list)
    incomplete: int = 0
    """Telegrams some reader could not take whole at once (the rest waited in its buffer)."""
    cpu_s: float = 0.0
    window_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        """Count, p50, p90, p99 and max in ms, the process's CPU in % of one core."""
        ordered = sorted(self.samples)

        def pct(q: float) -> float:
            if not ordered:
                return float("nan")
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        return {
            "label": self.label,
            "telegrams": len(ordered),
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
            "incomplete": self.incomplete,
            "cpu_percent": 100.0 * self.cpu_s / self.window_s if self.window_s else float("nan"),
        }


def variant_ids(count: int) -> list[str]:
    """The bench's variant ids."""
    return [f"m{i:02d}" for i in range(count)]


# --- the measured sides --------------------------------------------------------------------


class Window:
    """The measured window: samples count once the settle time has passed."""

    def __init__(self, settle_s: float) -> None:
        self.start_ns = time.monotonic_ns() + int(settle_s * 1e9)
        self.cpu_start: float | None = None
        self.cpu_end = 0.0
        self.end_ns = 0

    def open(self, received_ns: int) -> bool:
        """Is a telegram received at `received_ns` inside the window (noting the CPU)?"""
        if received_ns < self.start_ns:
            return False
        if self.cpu_start is None:
            self.cpu_start = time.process_time()
        return True

    def close(self, share: Share) -> None:
        """End the window; the CPU and length go into `share`."""
        self.end_ns = time.monotonic_ns()
        self.cpu_end = time.process_time()
        if self.cpu_start is not None:
            share.cpu_s = self.cpu_end - self.cpu_start
            share.window_s = max(1e-9, (self.end_ns - self.start_ns) / 1e9)


def run_tap_side(args: argparse.Namespace, broker: Any, folder: Path) -> Share:
    """Run the tap at rig load; its share per telegram."""
    from gateway.tap.core import Delivery
    from gateway.tap.outputs import TcpFanout
    from gateway.tap.service import PtySpec, Tap, TapSettings, TcpSpec

    variants = variant_ids(args.ports)
    tcp, pty = [], []
    for n, variant in enumerate(variants):
        if uses_tcp(args.outputs, n):
            tcp.append(TcpSpec(variant, "127.0.0.1", 0))
        else:
            pty.append(PtySpec(variant, folder / f"p1-{variant}"))
    share = Share("tap")
    window = Window(args.settle)

    def observe(delivery: Delivery, done_ns: int, complete: bool) -> None:
        if window.open(delivery.received_ns):
            share.samples.append(done_ns - delivery.received_ns)
            if not complete:
                share.incomplete += 1

    settings = TapSettings(
        host=broker.host,
        port=broker.port,
        username=HOLDER,
        password=PASSWORDS[HOLDER],
        rig=RIG,
        tcp=tuple(tcp),
        pty=tuple(pty),
        client_id="p1-bench-tap",
    )
    driver: subprocess.Popen[bytes] | None = None

    def say(text: str) -> None:
        if text.startswith("subscribed") and driver is not None and driver.stdin is not None:
            window.start_ns = time.monotonic_ns() + int(args.settle * 1e9)
            with contextlib.suppress(OSError):
                driver.stdin.write(b"go\n")
                driver.stdin.flush()

    tap = Tap(settings, observer=observe, say=say)
    try:
        tap.open()
        targets = []
        for variant in variants:
            for output in tap.outputs(variant):
                if isinstance(output, TcpFanout):
                    targets += ["--tcp", f"{variant}=127.0.0.1:{output.port}"]
                else:
                    targets += ["--pty", f"{variant}={folder / f'p1-{variant}'}"]
        window.start_ns = 2**62  # opens once the tap has subscribed (see say)
        driver = start_driver(args, broker, targets)

        def stop_when_done() -> None:
            assert driver is not None
            driver.wait()
            tap.request_stop()

        threading.Thread(target=stop_when_done, daemon=True).start()
        tap.run()
        window.close(share)
    finally:
        tap.close()
        if driver is not None and driver.poll() is None:
            driver.kill()
    return share


class Floor:
    """The floor: paho's on_message writes each payload to its variant's output itself."""

    def __init__(self, args: argparse.Namespace, broker: Any, folder: Path) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.variants = variant_ids(args.ports)
        self.listeners: dict[str, socket.socket] = {}
        self.masters: dict[str, int] = {}
        self.links: dict[str, Path] = {}
        for n, variant in enumerate(self.variants):
            if uses_tcp(args.outputs, n):
                self.listeners[variant] = socket.create_server(("127.0.0.1", 0))
            else:
                master, slave = os.openpty()
                tty.setraw(slave)
                link = folder / f"floor-{variant}"
                link.unlink(missing_ok=True)
                link.symlink_to(os.ttyname(slave))
                os.close(slave)
                self.masters[variant], self.links[variant] = master, link
        self.writers: dict[str, list[Any]] = {v: [] for v in self.variants}
        self.sockets: list[socket.socket] = []
        self.topics = {f"p1/{RIG}/slot/{HOLDER}/{v}/raw": v for v in self.variants}
        self.share = Share("floor")
        self.window = Window(args.settle)
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="p1-bench-floor", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(HOLDER, PASSWORDS[HOLDER])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.broker = broker

    def _on_connect(self, client: Any, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        """Subscribe to every variant's raw topic."""
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        """Write the payload to the variant's output at once (blocking), and time it."""
        received = time.monotonic_ns()
        for write in self.writers[self.topics[message.topic]]:
            write(message.payload)
        done = time.monotonic_ns()
        if self.window.open(received):
            self.share.samples.append(done - received)

    def run(self, args: argparse.Namespace) -> Share:
        """Let the driver connect, serve until it is done."""
        targets = []
        for variant, listener in self.listeners.items():
            targets += ["--tcp", f"{variant}=127.0.0.1:{listener.getsockname()[1]}"]
        for variant, link in self.links.items():
            targets += ["--pty", f"{variant}={link}"]
        driver = start_driver(args, self.broker, targets)
        try:
            for variant, listener in self.listeners.items():
                listener.settimeout(30)
                sock, _ = listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sockets.append(sock)
                self.writers[variant].append(sock.sendall)
            for variant, master in self.masters.items():
                self.writers[variant].append(lambda data, fd=master: os.write(fd, data))
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
            self.client.loop_start()
            if not self.subscribed.wait(15):
                raise RuntimeError("the floor's subscriber got no SUBACK")
            self.window.start_ns = time.monotonic_ns() + int(args.settle * 1e9)
            assert driver.stdin is not None
            driver.stdin.write(b"go\n")
            driver.stdin.flush()
            driver.wait()
            self.window.close(self.share)
        finally:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()
            for sock in [*self.sockets, *self.listeners.values()]:
                sock.close()
            for master in self.masters.values():
                os.close(master)
            if driver.poll() is None:
                driver.kill()
        return self.share


def uses_tcp(outputs: str, n: int) -> bool:
    """Does the variant at index `n` get a TCP listener (else a pty) under `--outputs`?"""
    return outputs == "tcp" or (outputs == "mixed" and n % 2 == 0)


# --- the driver (its own process) -----------------------------------------------------------


def start_driver(
    args: argparse.Namespace, broker: Any, targets: list[str]
) -> subprocess.Popen[bytes]:
    """Start the driver process: it connects to `targets`, then waits for "go" on stdin."""
    command = [
        sys.executable, "-m", "gateway.bench.tap", "drive",
        "--host", broker.host, "--port", str(broker.port),
        "--rate", str(args.rate), "--seconds", str(args.settle + args.seconds),
        *targets,
    ]  # fmt: skip
    return subprocess.Popen(command, stdin=subprocess.PIPE)


def rig_telegrams(count: int) -> list[bytes]:
    """One real telegram per variant (the virtual rig's models, cycled)."""
    from gateway import corpus
    from gateway.p1 import Framer
    from gateway.sim.catalogue import models_for

    out = []
    for model in models_for(count):
        frames = _frames(Framer().feed(corpus.entry(model.corpus_name).read()))
        out.append(frames[0] if frames else b"/X\r\n!\r\n")
    return out


def _frames(events: Sequence[Any]) -> list[bytes]:
    """The raw bytes of the Frame events."""
    from gateway.p1 import Frame

    return [e.raw for e in events if isinstance(e, Frame)]


def drive(argv: Sequence[str]) -> int:
    """The driver: read every output, publish the rig's telegrams on a steady schedule."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    parser = argparse.ArgumentParser(prog="gateway.bench.tap drive")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--tcp", action="append", default=[])
    parser.add_argument("--pty", action="append", default=[])
    args = parser.parse_args(argv)

    selector = selectors.DefaultSelector()
    order: list[str] = []
    for spec in args.tcp:
        variant, _, address = spec.partition("=")
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), 10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock.recv)
        order.append(variant)
    for spec in args.pty:
        variant, _, path = spec.partition("=")
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        selector.register(fd, selectors.EVENT_READ, lambda n, fd=fd: os.read(fd, n))
        order.append(variant)
    read_bytes = 0
    done = threading.Event()

    def read_all() -> None:
        nonlocal read_bytes
        while not done.is_set():
            for key, _ in selector.select(0.2):
                with contextlib.suppress(BlockingIOError):
                    read_bytes += len(key.data(65536))

    threading.Thread(target=read_all, daemon=True).start()
    variants = sorted(order)
    raws = rig_telegrams(len(variants))
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"p1-bench-rig-{os.getpid()}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(RIG, PASSWORDS[RIG])
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    sys.stdin.readline()  # "go": the tap (or the floor) is subscribed
    period = 1.0 / args.rate
    start = time.monotonic() + 0.05
    published = 0
    for k in range(int(args.seconds / period)):
        for i, variant in enumerate(variants):
            due = start + k * period + i * period / len(variants)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("seq", str(k + 1)), ("variant", variant)]
            topic = f"p1/{RIG}/slot/{HOLDER}/{variant}/raw"
            client.publish(topic, raws[i], qos=1, properties=props)
            published += 1
    time.sleep(0.5)
    done.set()
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"published": published, "read_bytes": read_bytes}), file=sys.stderr)
    return 0


# --- the command -------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the bench; print the figures."""
    from gateway.devkit.mosquitto import MosquittoBroker

    shares: list[Share] = []
    with (
        tempfile.TemporaryDirectory(prefix="p1-bench-tap-") as tmp,
        MosquittoBroker(PASSWORDS, rigs=(RIG,)) as broker,
    ):
        shares.append(run_tap_side(args, broker, Path(tmp)))
        if not args.skip_floor:
            shares.append(Floor(args, broker, Path(tmp)).run(args))
    rows = [share.figures() for share in shares]
    print(
        f"tap share: receipt in paho's on_message -> last byte written, {args.ports} variants x "
        f"{args.rate:g}/s, {args.outputs} outputs, {args.seconds:g} s window "
        f"({platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"{'':6} {'telegrams':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'CPU %':>6} {'incomplete':>10}")  # fmt: skip
    for row in rows:
        print(
            f"{row['label']:6} {row['telegrams']:>9} {row['p50_ms']:>8.3f} {row['p90_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f} {row['max_ms']:>8.3f} {row['cpu_percent']:>6.2f} "
            f"{row['incomplete']:>10}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args) | {"_bench_main": None},
                                               "rows": rows}, indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        sys.exit(drive(sys.argv[2:]))
    sys.exit("usage: python -m gateway.bench.tap drive ... (the bench's driver)")
