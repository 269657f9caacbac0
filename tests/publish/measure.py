"""Measure the publisher (not a test): submit cost on the reader thread and drain rate.

python -m tests.publish.measure [telegrams]   (run from the repository root)
Starts a private mosquitto from config/mosquitto, like the tests.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.publish import Publisher
from tests.publish.helpers import EXTRA_ACL, PASSWORDS, all_day, make_telegram, settings
from tests.support.mosquitto import MosquittoBroker, MqttProbe, wait_until


def submit_costs(pub: Publisher, n: int, start: int) -> list[float]:
    """Microseconds per submit_telegram call, one telegram every 2 ms."""
    costs = []
    for i in range(n):
        t = make_telegram(start + i)
        t0 = time.perf_counter_ns()
        pub.submit_telegram("v5", t, time.monotonic_ns(), time.time_ns())
        costs.append((time.perf_counter_ns() - t0) / 1000)
        time.sleep(0.002)
    return costs


def pct(values: list[float], q: float) -> float:
    """The q-quantile."""
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def main(argv: list[str]) -> int:
    """Run the measurements and print them."""
    n = int(argv[1]) if len(argv) > 1 else 2000
    with MosquittoBroker(PASSWORDS, extra_acl=EXTRA_ACL) as broker:
        tester = MqttProbe(
            broker,
            "acme",
            PASSWORDS["acme"],
            ["p1/rig-a/slot/acme/#"],
            client_id="acme-measure",
            persistent=True,
        ).start()
        spool_tmp = tempfile.TemporaryDirectory(prefix="p1gw-measure-")
        spool = Path(spool_tmp.name)
        pub = Publisher(settings(spool, broker, batch_interval=1.0), all_day("acme"))
        pub.start()
        wait_until(lambda: pub.status().connected, 10)
        live = submit_costs(pub, n, 0)
        pub.flush(30)
        broker.terminate()
        wait_until(lambda: not pub.status().connected, 10)
        down = submit_costs(pub, n, n)
        pub.commit_now(10)
        backlog = pub.status().outstanding
        broker.start()
        wait_until(lambda: pub.status().connected, 30)
        t0 = time.monotonic()
        pub.flush(300)
        drain = time.monotonic() - t0
        wait_until(lambda: len(tester.snapshot()) >= 4 * n, 30)
        pub.stop()
        tester.stop()
        spool_tmp.cleanup()
        print(
            f"submit_telegram, broker connected ({n}): p50 {pct(live, 0.5):.0f} us, "
            f"p99 {pct(live, 0.99):.0f} us, max {max(live):.0f} us"
        )
        print(
            f"submit_telegram, broker down ({n}):      p50 {pct(down, 0.5):.0f} us, "
            f"p99 {pct(down, 0.99):.0f} us, max {max(down):.0f} us"
        )
        print(
            f"drain after outage: {backlog} messages in {drain:.2f} s after reconnect = "
            f"{backlog / drain:.0f} msg/s (window {pub.settings.mqtt.window}); "
            f"tester received {len(tester.snapshot())} of {4 * n} messages"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
