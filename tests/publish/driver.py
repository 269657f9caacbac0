"""A small real process running a Publisher, for kill -9 tests (not the daemon).

Usage: python -m tests.publish.driver '<json>' with keys: spool_dir, port, count (telegrams
per variant, 0 = none), rate (Hz per variant), start_n, variants, batch_interval,
exit_when_idle. stdout, line by line: "sub <variant> <n> <outcome>" per submit and
"status <json>" every 50 ms. SIGTERM stops the publisher cleanly and exits 0.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

from gateway.publish import Publisher
from tests.publish.helpers import all_day, make_telegram, settings


def main(argv: list[str]) -> int:
    """Run one publisher as configured by argv[1]."""
    cfg = json.loads(argv[1])
    pub = Publisher(
        settings(
            Path(cfg["spool_dir"]),
            None,
            port=cfg["port"],
            batch_interval=cfg.get("batch_interval", 0.2),
        ),
        all_day("acme"),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pub.start()
    out = sys.stdout
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            out.write(line + "\n")
            out.flush()

    def report() -> None:
        while not stop.is_set():
            st = pub.status()
            say(
                "status "
                + json.dumps(
                    {
                        "connected": st.connected,
                        "outstanding": st.outstanding,
                        "spooled": st.spooled,
                        "pending": st.pending_commit,
                        "inflight": st.inflight,
                        "acked": st.counters.acked,
                        "published": st.counters.published,
                    }
                )
            )
            time.sleep(0.05)

    threading.Thread(target=report, daemon=True).start()
    n = cfg.get("start_n", 0)
    for _ in range(cfg.get("count", 0)):
        if stop.is_set():
            break
        for v in cfg.get("variants", ["v5"]):
            outcome = pub.submit_telegram(v, make_telegram(n), time.monotonic_ns(), time.time_ns())
            say(f"sub {v} {n} {outcome.value}")
        n += 1
        time.sleep(1 / cfg.get("rate", 50.0))
    say("done")
    while not stop.is_set():
        if cfg.get("exit_when_idle") and pub.status().outstanding == 0:
            break
        time.sleep(0.05)
    stop.set()
    pub.stop(timeout=3.0)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
