"""The MQTT link: 3.1.1 fallback, paho thread revival, clean shutdown, life without a broker."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gateway.publish import Publisher, SubmitOutcome
from tests.publish.helpers import (
    EXTRA_ACL,
    PASSWORDS,
    all_day,
    counter_of,
    make_telegram,
    settings,
    telegrams,
)
from tests.support.mosquitto import OPENSSL, MosquittoBroker, MqttProbe, free_port, wait_until


class V311OnlyGate:
    """A TCP gate in front of the real broker that answers MQTT 5 CONNECTs as a 3.1.1 broker.

    mosquitto 2 speaks MQTT 5, so a broker that refuses it cannot run here; this gate refuses
    protocol level 5 with CONNACK return code 1 (unacceptable protocol version), exactly what
    a 3.1.1-only broker sends, and passes every other connection through to mosquitto.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.refused_v5 = 0
        self.passed = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        """Accept connections until closed."""
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _read_packet(conn: socket.socket) -> bytes:
        """One whole MQTT packet (fixed header, remaining length, body)."""
        data = conn.recv(1)
        length, shift = 0, 0
        while True:
            b = conn.recv(1)
            data += b
            length |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
        want = len(data) + length
        while len(data) < want:
            chunk = conn.recv(want - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        """Refuse v5, pipe anything else to mosquitto."""
        try:
            packet = self._read_packet(conn)
            header_len = 1 + next(i for i in range(1, 5) if not packet[i] & 0x80)
            level = packet[header_len + 6]  # after the 2-byte length and b"MQTT"
            if level == 5:
                self.refused_v5 += 1
                conn.sendall(b"\x20\x02\x00\x01")
                conn.close()
                return
            self.passed += 1
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            up.sendall(packet)
            for src, dst in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()
        except (OSError, IndexError, StopIteration):
            conn.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        """Copy bytes one way until either side closes."""
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting."""
        self._stop.set()
        self._server.close()


def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """CONNACK 'unacceptable protocol version' to v5: reconnect as 3.1.1 and deliver."""
    gate = V311OnlyGate(broker.port)
    try:
        tester = probe("acme", ["p1/rig-a/slot/acme/#"])
        pub = publisher(settings(spool_dir, broker, port=gate.port), all_day("acme"))
        for n in range(10):
            pub.submit_telegram("v5", make_telegram(n), time.monotonic_ns(), time.time_ns())
        assert wait_until(lambda: pub.status().connected, 20), pub.status()
        assert pub.flush(20)
        assert tester.wait_for(lambda ms: len(telegrams(ms)) == 10, 10)
        assert [counter_of(g.payload) for g in telegrams(tester.snapshot())] == list(range(10))
        st = pub.status()
        assert st.protocol == "3.1.1" and st.counters.protocol_fallbacks == 1
        assert gate.refused_v5 >= 1 and gate.passed >= 1
        assert "(p2, " in broker.log()  # mosquitto logs 3.1.1 clients as p2 (v5: p5)
    finally:
        gate.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_network_thread_is_restarted(broker, probe, publisher, spool_dir: Path) -> None:
    """The network thread ends: liveness says so, the writer restarts it, messages flow."""
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    assert pub.liveness().ok()
    client = pub.link.client
    assert client is not None
    original = client.loop_misc

    def ends_the_thread() -> None:
        """What an exception the loop does not catch (not an Exception) does, once."""
        client.loop_misc = original
        raise SystemExit("network thread ends")

    client.loop_misc = ends_the_thread
    pub.link.hurry()  # wakes the network thread now
    assert wait_until(lambda: pub.status().counters.paho_restarts == 1, 10)
    assert wait_until(lambda: pub.liveness().network_thread_alive, 5)
    pub.submit_telegram("v5", make_telegram(1), time.monotonic_ns(), time.time_ns())
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == 1, 15)
    assert pub.liveness().ok()


def test_clean_stop_publishes_offline_status(broker, probe, spool_dir: Path) -> None:
    """stop(): retained status becomes offline (reason shutdown), the will is not used."""
    pub = Publisher(settings(spool_dir, broker), all_day("acme"))
    pub.start()
    assert wait_until(lambda: pub.status().connected, 10)
    pub.stop(timeout=5)
    assert not pub.liveness().writer_alive
    watcher = probe("bravo", ["p1/rig-a/status"])
    assert watcher.wait_for(lambda ms: len(ms) == 1, 10)
    assert json.loads(watcher.snapshot()[0].payload) == {
        "rig": "rig-a",
        "state": "offline",
        "reason": "shutdown",
    }


def test_without_a_broker_everything_waits_in_the_spool(spool_dir: Path) -> None:
    """Unreachable broker: nothing published, all spooled; restart keeps seqs increasing."""
    port = free_port()  # nobody listens here
    pub = Publisher(settings(spool_dir, None, port=port), all_day("acme"))
    pub.start()
    for n in range(20):
        assert (
            pub.submit_telegram("v5", make_telegram(n), 0, time.time_ns()) is SubmitOutcome.ROUTED
        )
    pub.submit_invalid("v5", b"/X\r\n!0000\r\n", "CRC mismatch", 0, time.time_ns())
    assert pub.commit_now(5)
    st = pub.status()
    # 20 telegrams (telegram + raw), 1 invalid, and the session's start.
    assert (st.spooled, st.outstanding, st.counters.published) == (42, 42, 0)
    stopper = threading.Thread(target=pub.stop, kwargs={"timeout": 2})
    stopper.start()
    stopper.join(6)  # stop(timeout=2) must honour its deadline, with room for a slow machine
    assert not stopper.is_alive(), "stop() did not return"
    pub = Publisher(settings(spool_dir, None, port=port), all_day("acme"))
    pub.start()
    assert pub.status().outstanding == 42
    pub.submit_telegram("v5", make_telegram(99), 0, time.time_ns())
    pub.stop(timeout=1)
    db = sqlite3.connect(spool_dir / "spool.sqlite3")
    seqs = [
        s
        for (s,) in db.execute(
            "SELECT seq FROM spool WHERE kind IN ('telegram', 'invalid') ORDER BY id"
        )
    ]
    invalid = db.execute("SELECT topic, payload FROM spool WHERE kind = 'invalid'").fetchone()
    db.close()
    assert seqs[:21] == list(range(1, 22)) and seqs[21] > 21 and len(seqs) == 22
    assert invalid[0] == "p1/rig-a/slot/acme/v5/invalid"
    assert json.loads(invalid[1])["raw"] == "/X\r\n!0000\r\n"


def test_full_spool_drops_oldest_and_counts(spool_dir: Path) -> None:
    """A bounded spool drops its oldest messages, counted in status, never blocks."""
    pub = Publisher(settings(spool_dir, None, port=free_port(), max_bytes=20_000), all_day("acme"))
    pub.start()
    for n in range(50):
        pub.submit_telegram("v5", make_telegram(n), 0, time.time_ns())
    assert pub.commit_now(5)
    st = pub.status()
    assert st.spooled_bytes <= 20_000 and st.counters.dropped_full > 0
    # 50 telegrams (telegram + raw) and the session's start, which is never dropped.
    assert st.spooled + st.counters.dropped_full == 101
    assert st.outstanding == st.spooled
    pub.stop(timeout=1)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is needed to make a throwaway CA")
def test_tls_with_the_configured_ca_and_a_refusal_with_another(tmp_path: Path) -> None:
    """TLS on when tls_ca_file is set: delivered with the right CA, nothing with a wrong one."""
    with MosquittoBroker(PASSWORDS, extra_acl=EXTRA_ACL, tls=True) as broker:
        tester = MqttProbe(broker, "acme", PASSWORDS["acme"], ["p1/rig-a/slot/acme/#"]).start()
        base = settings(tmp_path / "a", broker, port=broker.tls_port)
        good = Publisher(
            dataclasses.replace(
                base, mqtt=dataclasses.replace(base.mqtt, tls_ca_file=broker.ca_file)
            ),
            all_day("acme"),
        )
        other_ca = tmp_path / "other-ca.crt"
        subprocess.run(
            [
                OPENSSL,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(tmp_path / "k"),
                "-out",
                str(other_ca),
                "-days",
                "1",
                "-subj",
                "/CN=someone-else",
            ],
            check=True,
            capture_output=True,
        )
        base_b = settings(tmp_path / "b", broker, port=broker.tls_port)
        bad = Publisher(
            dataclasses.replace(
                base_b,
                mqtt=dataclasses.replace(
                    base_b.mqtt, tls_ca_file=other_ca, client_id="p1gw-wrong-ca"
                ),
            ),
            all_day("acme"),
        )
        good.start()
        bad.start()
        try:
            good.submit_telegram("v5", make_telegram(1), 0, time.time_ns())
            bad.submit_telegram("v5", make_telegram(2), 0, time.time_ns())
            assert tester.wait_for(lambda ms: len(telegrams(ms)) >= 1, 15)
            assert wait_until(lambda: bad.status().counters.connect_failures >= 1, 15)
            time.sleep(1.0)
            assert [counter_of(g.payload) for g in telegrams(tester.snapshot())] == [1]
            assert good.status().connected and not bad.status().connected
            # telegram + raw, and the session's start
            assert bad.status().outstanding == 3 and bad.status().counters.published == 0
        finally:
            good.stop(timeout=2)
            bad.stop(timeout=2)
            tester.stop()


def test_submit_never_raises_even_on_a_bug(spool_dir: Path) -> None:
    """Garbage from the reader thread is counted and refused, not raised; later ones flow."""
    pub = Publisher(settings(spool_dir, None, port=free_port()), all_day("acme"))
    pub.start()
    try:
        assert pub.submit_telegram("v5", object(), 0, time.time_ns()) is SubmitOutcome.REJECTED
        assert pub.submit_invalid("v5", None, "x", 0, time.time_ns()) is SubmitOutcome.REJECTED
        assert (
            pub.submit_telegram("v5", make_telegram(1), 0, time.time_ns()) is SubmitOutcome.ROUTED
        )
        st = pub.status()
        assert st.counters.internal_errors + st.counters.rejected_local == 2
        assert st.last_error and pub.liveness().writer_alive
    finally:
        pub.stop(timeout=1)


def test_a_spooled_nul_topic_is_quarantined_not_resent_forever(
    broker, probe, publisher, spool_dir: Path
) -> None:
    """A NUL in a topic would make mosquitto drop us on every resend: it is set aside instead."""
    from gateway.publish.spool import CommitBatch, Spool, SpoolMessage

    spool = Spool(spool_dir / "spool.sqlite3", max_bytes=10**6).open()
    bad = SpoolMessage(1, "v5", 1, "telegram", "p1/rig-a/slot/acme/v5\x00/telegram", b"{}", 1, 0)
    spool.commit(CommitBatch(inserts=[bad], reservations={"v5": 1}))
    spool.close()
    tester = probe("acme", ["p1/rig-a/slot/acme/#"])
    pub = publisher(settings(spool_dir, broker), all_day("acme"))
    for n in range(5):
        pub.submit_telegram("v5", make_telegram(n), 0, time.time_ns())
    assert pub.flush(15), pub.status()
    assert tester.wait_for(lambda ms: len(telegrams(ms)) == 5, 10)
    st = pub.status()
    assert st.counters.rejected_local == 1 and st.counters.disconnects == 0
    assert st.counters.connects == 1
    assert [counter_of(g.payload) for g in telegrams(tester.snapshot())] == list(range(5))


def test_liveness_holds_while_idle_and_while_the_broker_is_away(broker, publisher, spool_dir):
    """Nothing to publish (outside every slot) or no broker: still live, within budget."""
    pub = publisher(settings(spool_dir, broker, keepalive=60), all_day("acme"))
    assert wait_until(lambda: pub.status().connected, 10)
    ages = []
    for _ in range(30):  # 3 s connected with nothing to send; keepalive is 60 s
        live = pub.liveness()
        assert live.ok(), live
        ages.append(live.network_progress_age)
        time.sleep(0.1)
    assert max(ages) < live.network_budget <= 10
    broker.terminate()
    assert wait_until(lambda: not pub.status().connected, 10)
    for _ in range(40):  # 4 s of reconnect attempts and backoff
        live = pub.liveness()
        assert live.ok(), live
        time.sleep(0.1)
    assert live.network_budget > 10 and pub.liveness_max_age >= live.network_budget
