"""A reload storm: SIGHUPs and config rewrites, valid and invalid, in quick succession.

Promise: the daemon stays up; an invalid config is refused whole (the running one stays);
a valid one is applied as a diff, so ports it does not change lose nothing; the last config
written is the one running at the end, picked up from the file without a signal.

Ports: two are never edited; one gets catalogue-only edits (its description: the port config
is the same, so it must not even be reopened); one is churned (removed, re-added, its spec
switched between its own and `auto`, which reopens it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.harness import RIG_ID
from tests.reliability.harness import (
    FaultHarness,
    Ledger,
    first_received,
    models,
    record,
    soak_setting,
    wait_flowing,
)
from tests.support.mosquitto import wait_until

#: Broken files of each kind: (what is wrong, how to break the valid text).
BROKEN_VARIANTS = {
    "bad id": lambda t, s: t.replace(f'id = "{s.untouched[1]}"', 'id = "a/b"'),
    "unknown spec": lambda t, s: t.replace(f'description = "{s.description}"', 'spec = "V9"'),
    "unknown key": lambda t, s: t.replace(
        f'id = "{s.untouched[0]}"', f'id = "{s.untouched[0]}"\ncolour = "red"'
    ),
    "TOML syntax": lambda t, s: t + "\n[[variant]\n",
    "two variants on one port": lambda t, s: t.replace(
        s.ports[s.catalogue_only], s.ports[s.untouched[0]]
    ),
}
BROKEN_SLOTS = {
    "overlap": lambda t, s: t + _slot("beta", s.now, s.now + timedelta(minutes=5)),
    "end before start": lambda t, s: (
        t + _slot("beta", s.now + timedelta(hours=5), s.now + timedelta(hours=4))
    ),
    "bad holder": lambda t, s: t.replace('holder = "acme"', 'holder = "Acme Corp"'),
}
BROKEN_MAIN = {
    "mqtt.port 0": lambda t, s: t.replace("[mqtt]\n", "[mqtt]\nport = 0\n", 1),
    "unknown section": lambda t, s: t + "\n[colour]\nred = true\n",
}


def _broken(breaker: Any, text: str, state: RigState) -> str:
    """The valid text broken by `breaker` (which must change it)."""
    bad = breaker(text, state)
    assert bad != text, "a breaker left the file valid"
    return str(bad)


def _slot(holder: str, start: datetime, end: datetime) -> str:
    """One [[slot]] block."""
    return (
        f'\n[[slot]]\nholder = "{holder}"\nstart = {start.isoformat()}\nend = {end.isoformat()}\n'
    )


@dataclass
class RigState:
    """What the three config files say (a valid state) and how to write it."""

    untouched: list[str]
    catalogue_only: str
    churned: str
    ports: dict[str, str]
    specs: dict[str, str]
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    churned_spec: str | None = "own"
    """"own", "auto" or None (removed)."""
    description: str = "edit 0"
    acme_extra_min: int = 0
    beta_slot: bool = False
    log_level: str = "debug"

    def variants_text(self) -> str:
        """The variants file."""
        out = ""
        for v in self.ports:
            if v == self.churned and self.churned_spec is None:
                continue
            spec = "auto" if v == self.churned and self.churned_spec == "auto" else self.specs[v]
            out += f'[[variant]]\nid = "{v}"\nport = "{self.ports[v]}"\nspec = "{spec}"\n'
            if v == self.catalogue_only:
                out += f'description = "{self.description}"\n'
            out += "\n"
        return out

    def slots_text(self) -> str:
        """The slots file: acme holds the rig now; maybe beta later."""
        end = self.now + timedelta(hours=2, minutes=self.acme_extra_min)
        text = _slot("acme", self.now - timedelta(hours=1), end)
        if self.beta_slot:
            text += _slot("beta", self.now + timedelta(hours=3), self.now + timedelta(hours=4))
        return text

    def main_text(self, base: str) -> str:
        """The main file with this log level."""
        return base.replace('level = "debug"', f'level = "{self.log_level}"')


def write_atomically(path: Path, text: str) -> None:
    """Replace a file the way editors do (a new file renamed over the old)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reload_outcome(h: FaultHarness, since_s: float, timeout: float = 15.0) -> str | None:
    """The STATUS of the first reload that started after `since_s` (time.monotonic)."""
    assert h.notify is not None
    since_usec = int(since_s * 1e6)
    found: list[str] = []

    def done() -> bool:
        started = False
        for _, msg in list(h.notify.messages):
            if msg.get("RELOADING") == "1" and int(msg.get("MONOTONIC_USEC", "0")) >= since_usec:
                started = True
            elif started and msg.get("READY") == "1":
                found.append(msg.get("STATUS", ""))
                return True
        return False

    wait_until(done, timeout, 0.02)
    return found[0] if found else None


def storm(steps: int, seconds: float, *, seed: int = 11) -> dict[str, Any]:
    """Run `steps` reloads over about `seconds`; return the figures."""
    rng = random.Random(seed)
    with FaultHarness(models(4), rate=5.0) as h:
        base_main = h.config.read_text()
        assert 'level = "debug"' in base_main
        catalogue_probe = h.probe("beta", [f"p1/{RIG_ID}/variants"])
        tester = h.tester()
        ledger = Ledger(h, tester)
        a, b, c_only, churned = h.variants
        state = RigState(
            untouched=[a, b],
            catalogue_only=c_only,
            churned=churned,
            ports=h.rig.ports(),
            specs={m.id: m.spec for m in h.models},
        )
        write_atomically(h.variants_file, state.variants_text())
        write_atomically(h.slots_file, state.slots_text())
        assert wait_until(lambda: h.safe_status().get("gateway", {}).get("reloads", 0) >= 1, 15)
        assert wait_flowing(ledger, h.variants, 5, 60), h.log()[-3000:]
        first = first_received(ledger, [a, b, c_only])

        log: list[dict[str, Any]] = []
        broken_next: str | None = None
        interval = seconds / steps
        t0 = time.monotonic()
        for i in range(steps):
            time.sleep(max(0.0, t0 + i * interval - time.monotonic()))  # the storm's cadence
            last = i == steps - 1
            kind = rng.choice(["variants", "variants", "slots", "main", "signal-only"])
            valid = last or broken_next is not None or rng.random() < 0.6
            if broken_next is not None:
                kind, broken_next = broken_next, None  # repair what the last step broke
            how = "hup" if last or kind == "signal-only" or rng.random() < 0.5 else "file"
            what = "no change"
            if kind == "variants":
                state = replace(
                    state,
                    churned_spec=rng.choice(["own", "auto", None]),
                    description=f"edit {i + 1}",
                )
                text, what = state.variants_text(), f"churned={state.churned_spec}"
                if not valid:
                    what, breaker = rng.choice(sorted(BROKEN_VARIANTS.items()))
                    text = _broken(breaker, text, state)
                    broken_next = kind
                write_atomically(h.variants_file, text)
            elif kind == "slots":
                state = replace(state, acme_extra_min=i + 1, beta_slot=rng.random() < 0.5)
                text, what = state.slots_text(), f"beta_slot={state.beta_slot}"
                if not valid:
                    what, breaker = rng.choice(sorted(BROKEN_SLOTS.items()))
                    text = _broken(breaker, text, state)
                    broken_next = kind
                write_atomically(h.slots_file, text)
            elif kind == "main":
                state = replace(state, log_level=rng.choice(["debug", "info"]))
                text, what = state.main_text(base_main), f"log={state.log_level}"
                if not valid:
                    what, breaker = rng.choice(sorted(BROKEN_MAIN.items()))
                    text = _broken(breaker, text, state)
                    broken_next = kind
                write_atomically(h.config, text)
            else:
                valid = broken_next is None
            entry: dict[str, Any] = {"step": i + 1, "kind": kind, "how": how, "what": what}
            entry["valid"] = broken_next is None
            if how == "hup":
                sent_at = time.monotonic()
                h.signal(signal.SIGHUP)
                outcome = reload_outcome(h, sent_at)
                assert outcome is not None, f"step {i + 1}: no reload\n{h.log()[-3000:]}"
                refused = outcome.startswith("config refused")
                assert refused == (not entry["valid"]), (entry, outcome)
                entry["refused"] = refused
            assert h.alive(), h.log()[-3000:]
            log.append(entry)
        storm_s = time.monotonic() - t0

        # The final config, written without a signal: the file watcher must apply it.
        final = replace(state, churned_spec="own", description="final", log_level="debug")
        written = time.monotonic()
        write_atomically(h.variants_file, final.variants_text())

        def applied() -> bool:
            msgs = catalogue_probe.snapshot()
            if not msgs or not msgs[-1].payload:
                return False
            entries = json.loads(msgs[-1].payload)["variants"]
            return {e["id"]: e.get("description") for e in entries}.get(c_only) == "final" and (
                churned in h.safe_status().get("ports", {})
            )

        assert wait_until(applied, 20), h.log()[-3000:]
        applied_after_s = time.monotonic() - written
        churned_mark = h.sent(churned)
        assert wait_until(
            lambda: any(n > churned_mark for n in ledger.update()[churned].by_sim), 20
        ), "the re-added port does not deliver"
        h.rig.pause()
        assert h.rig.wait_drained(10)
        last_sent = {v: h.sent(v) for v in (a, b, c_only)}
        assert ledger.wait_all({v: (first[v], last_sent[v]) for v in (a, b, c_only)}, 60)
        accounts = {v: ledger.account(v, first[v], last_sent[v]) for v in (a, b, c_only)}
        for v, acc in accounts.items():
            assert acc["lost"] == 0 and acc["foreign"] == 0 and not acc["conflicts"], (v, acc)
        status = h.safe_status()
        counters = status["gateway"]
        assert status["config"]["last_reload"]["ok"] is True
        reopened = [
            e
            for e in h.log_events()
            if e.get("event") == "port opened" and e.get("variant") in (a, b, c_only)
        ]
        assert len(reopened) == 3, f"an unchanged port was reopened: {reopened}"
        tester.stop()
        catalogue_probe.stop()
        hups = [e for e in log if e["how"] == "hup"]
        return {
            "steps": steps,
            "storm_s": round(storm_s, 1),
            "sighup_steps": len(hups),
            "file_only_steps": steps - len(hups),
            "invalid_steps": sum(not e["valid"] for e in log),
            "sighup_refused_as_expected": sum(e.get("refused", False) for e in hups),
            "sighup_applied_as_expected": sum(not e.get("refused", True) for e in hups),
            "daemon_reloads": counters["reloads"],
            "daemon_reloads_refused": counters["reloads_refused"],
            "final_applied_from_file_s": round(applied_after_s, 2),
            "untouched_ports": {
                v: {k: acc[k] for k in ("sent", "received", "lost")} for v, acc in accounts.items()
            },
            "churned_port_telegrams_received": len(ledger[churned].by_sim),
            "duplicates": sum(acc["raw_duplicates"] for acc in accounts.values()),
            "kinds": sorted({e["what"] for e in log if not e["valid"]}),
        }


def test_reload_storm_refuses_the_invalid_and_keeps_untouched_ports_whole() -> None:
    """20 reloads in ~10 s: daemon up, invalid refused, untouched ports lose nothing."""
    figures = storm(20, 10.0)
    record("reload_storm_quick", figures)
    assert figures["invalid_steps"] >= 3
    assert figures["daemon_reloads"] >= figures["sighup_steps"]


@pytest.mark.slow
def test_reload_storm_50_in_60_s() -> None:
    """Soak: 50 reloads in 60 s, SIGHUPs and rewrites, valid and invalid."""
    steps = int(soak_setting("reloads", 50))
    figures = storm(steps, soak_setting("reload_s", 60.0))
    record("reload_storm_soak", figures)
    assert figures["invalid_steps"] >= 8
