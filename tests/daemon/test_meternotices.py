"""A notice is never lost to a restart: stored with the observed state, sent until acknowledged."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from gateway.daemon.meternotices import MeterNotices
from gateway.p1.telegram import Telegram
from gateway.publish import Publisher
from tests.publish.helpers import EXTRA_ACL, PASSWORDS, all_day, settings
from tests.support.mosquitto import MosquittoBroker, MqttProbe, wait_until


def tg(version: str) -> Telegram:
    """A decoded telegram whose version line reads `version`."""
    objects: dict[str, Any] = {
        "1-3:0.2.8": {"name": None, "value": version},
        "0-0:96.1.1": {"name": None, "value": "4530303336303030303037363130"},
        "1-0:1.8.1": {"name": None, "value": "000123.456"},
    }
    return Telegram(b"/x!", "V5", "ISK5\\2M550T-1012", None, objects)


def run(spool: Path, broker: MosquittoBroker | None, *versions: str) -> tuple[int, list[str]]:
    """Start a publisher and the notices on `spool`, feed telegrams of these versions, stop;
    the notices posted and the notice topics the broker acknowledged."""
    pub = Publisher(settings(spool, broker), all_day("acme"))
    pub.start()
    notices = MeterNotices(pub)
    notices.open()
    try:
        for i, version in enumerate(versions):
            notices.telegram("v5", tg(version), i * 1_000_000_000, time.time_ns())
        notices.drain()  # what the main loop does with what the reader thread saw
        if broker is not None:
            assert wait_until(lambda: pub.status().connected, 5)
            assert pub.flush(5)
            time.sleep(0.5)  # (the notices go as control messages: let their PUBACKs in)
        acked = pub.take_acked_notices()
        notices.store.delete(acked)
        return notices.posted, acked
    finally:
        pub.stop(timeout=2)
        notices.close()


def stored(spool: Path) -> list[str]:
    """The notice topics the spool still holds."""
    with sqlite3.connect(settings(spool, None).spool.path) as db:
        return [t for (t,) in db.execute("SELECT topic FROM notice")]


def test_a_notice_made_offline_goes_out_after_a_restart_and_only_once(tmp_path: Path) -> None:
    """Offline: the change is stored with its notice; the next run sends it, the broker
    acknowledges it, it is deleted; a run after that posts nothing for the same meter."""
    spool = tmp_path / "spool"
    spool.mkdir()
    posted, acked = run(spool, None, "50", "50", "51", "51")  # no broker
    assert posted == 1 and acked == []
    (topic,) = stored(spool)
    broker = MosquittoBroker(PASSWORDS, rigs=("rig-a",), extra_acl=EXTRA_ACL).start()
    try:
        probe = MqttProbe(broker, "bravo", PASSWORDS["bravo"], ["p1/rig-a/notice/#"]).start()
        posted, acked = run(spool, broker, "51", "51")  # the same meter: nothing new
        assert posted == 0 and acked == [topic] and stored(spool) == []
        assert probe.wait_for(lambda ms: len(ms) >= 1, 5)
        (message,) = probe.snapshot()
        notice = json.loads(message.payload)
        assert message.topic == topic and notice["kind"] == "firmware"
        assert notice["before"] == {"1-3:0.2.8": "50"} and notice["after"] == {"1-3:0.2.8": "51"}
        posted, acked = run(spool, broker, "51")
        assert posted == 0 and acked == []
        probe.stop()
    finally:
        broker.close()


def test_the_reader_thread_only_sees_a_change_the_main_thread_stores_it(tmp_path: Path) -> None:
    """`telegram` (reader thread) writes nothing to disk; `drain` (main thread) stores it."""
    spool = tmp_path / "spool"
    spool.mkdir()
    pub = Publisher(settings(spool, None), all_day("acme"))
    pub.start()
    notices = MeterNotices(pub)
    notices.open()
    try:
        notices.telegram("v5", tg("1.0"), 0, time.time_ns())  # the baseline: no notice
        assert notices.telegram("v5", tg("2.0"), 10**9, time.time_ns())
        assert stored(spool) == [] and notices.posted == 0
        assert notices.drain()
        assert len(stored(spool)) == 1 and notices.posted == 1
        assert not notices.drain()
    finally:
        pub.stop(timeout=2)
        notices.close()
