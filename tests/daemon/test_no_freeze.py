"""Nothing that can block may freeze the gateway: systemd's and journald's sockets not read.

systemd-python's sd_notify and sd_journal_send block in C, holding the GIL, once the
receiver's queue is full, and every thread stopped with them. These run the daemon as a rig
does, a meter sending 20 telegrams a second to a real mosquitto, while nobody reads the notify
socket, or the journal socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.sim.catalogue import catalogue
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe, wait_until

RATE = 20.0
WINDOW_S = 8.0
PRIVATE_JOURNAL = Path(__file__).with_name("private_journal.py")
NAMESPACE = ["unshare", "--mount", "--propagation", "private", "--"]


def received_sequences(h: GatewayHarness, probe: MqttProbe, variant: str) -> set[int]:
    """The simulator's sequence numbers of the raw telegrams the tester received."""
    meter = h.rig.meter(variant)
    topic = f"p1/{RIG_ID}/slot/acme/{variant}/raw"
    seqs = {meter.sequence_of(m.payload) for m in probe.snapshot(lambda t: t == topic)}
    return {s for s in seqs if s is not None}


def run_window(h: GatewayHarness, *, during: float = WINDOW_S, sighup_every: float = 0.0) -> float:
    """Meter at 20/s for `during` s (optionally SIGHUP now and then); the share that arrived."""
    variant = h.models[0].id
    meter = h.rig.meter(variant)
    acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/{variant}/raw"])
    assert wait_until(lambda: len(received_sequences(h, acme, variant)) >= 3, 20), h.log()
    before = meter.stats()
    end = time.monotonic() + during
    next_hup = time.monotonic() + sighup_every
    while time.monotonic() < end:
        if sighup_every and time.monotonic() >= next_hup:
            h.signal(signal.SIGHUP)
            next_hup += sighup_every
        time.sleep(0.05)
    h.rig.pause()
    after = meter.stats()
    expected = set(range(before.telegrams + 1, after.telegrams + 1))
    # A meter whose port is not read drops telegrams once the pty is full: lost too.
    produced = len(expected) + after.dropped - before.dropped
    assert produced >= RATE * during * 0.8, "the simulator did not keep its rate"
    wait_until(lambda: expected <= received_sequences(h, acme, variant), 10)
    got = len(expected & received_sequences(h, acme, variant))
    acme.stop()
    return got / produced


def test_a_notify_socket_nobody_reads_freezes_nothing() -> None:
    """systemd stops reading: >= 99 % of the telegrams still arrive, and SIGTERM exits 0."""
    model = catalogue()["fluvius-t211"]
    with GatewayHarness([model], watchdog_usec=200_000) as h:  # a WATCHDOG=1 every 0.1 s
        h.rig.set_rate(RATE, line_pacing=False)
        assert h.notify is not None
        h.notify.pause()
        share = run_window(h)
        print(f"notify socket not read: {share:.1%} of the telegrams through")
        systemd = h.status().get("systemd", {})
        code, took = h.stop_daemon(timeout=10)
    print(f"notify socket not read: exit {code} after {took:.2f} s")
    assert share >= 0.99
    assert code == 0
    assert took < 5.0
    assert systemd.get("notify_blocked", 0) > 0, "the notify socket never filled up"


def private_journal_unavailable() -> str | None:
    """Why a private journal socket cannot be had here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root, for a private mount namespace with a tmpfs over /run/systemd/journal"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs util-linux's unshare and mount"
    probe = subprocess.run(
        [*NAMESPACE, sys.executable, str(PRIVATE_JOURNAL), "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()[-200:]}"
    return None


def test_a_journal_nobody_reads_freezes_nothing() -> None:
    """journald stops reading while reloads log: >= 99 % still arrive, and SIGTERM exits 0."""
    why = private_journal_unavailable()
    if why is not None:
        pytest.skip(why)
    model = catalogue()["fluvius-t211"]
    wrap = [*NAMESPACE, sys.executable, str(PRIVATE_JOURNAL)]
    with GatewayHarness([model], log_format="journal", wrap=wrap) as h:
        h.rig.set_rate(RATE, line_pacing=False)
        share = run_window(h, sighup_every=0.5)
        print(f"journal not read: {share:.1%} of the telegrams through")
        status = h.status()
        code, took = h.stop_daemon(timeout=10)
    print(f"journal not read: exit {code} after {took:.2f} s")
    assert share >= 0.99
    assert code == 0
    assert took < 5.0
    assert status["config"]["last_reload"]["ok"]
    assert status["gateway"]["reloads"] >= 10
    assert status["log"]["dropped"] > 0, "the journal socket never filled up"
