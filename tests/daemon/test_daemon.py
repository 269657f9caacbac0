"""The daemon end to end: real broker, virtual rig on ptys, real signals, a notify socket."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe, wait_until


def telegrams_of(probe: MqttProbe, holder: str, variant: str, kind: str = "raw") -> list[bytes]:
    """Payloads a probe received on one holder's topic for one variant."""
    topic = f"p1/{RIG_ID}/slot/{holder}/{variant}/{kind}"
    return [m.payload for m in probe.snapshot(lambda t: t == topic)]


def sim_sequence(h: GatewayHarness, variant: str, raws: list[bytes]) -> list[int | None]:
    """The simulator's sequence number of each raw telegram received (None: not its own)."""
    meter = h.rig.meter(variant)
    return [meter.sequence_of(raw) for raw in raws]


def test_daemon_publishes_to_the_holder_only_and_talks_to_systemd() -> None:
    """Telegrams reach the slot holder exactly; others get none; READY, WATCHDOG, STOPPING sent."""
    with GatewayHarness() as h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        beta = h.probe("beta", ["p1/#"])
        variants = [m.id for m in h.models]
        assert wait_until(
            lambda: all(len(telegrams_of(acme, "acme", v)) >= 3 for v in variants), 30
        ), h.log()
        for v in variants:
            raws = telegrams_of(acme, "acme", v)
            assert None not in sim_sequence(h, v, raws), "a raw payload is not what the meter sent"
            decoded = [json.loads(p) for p in telegrams_of(acme, "acme", v, "telegram")]
            assert decoded and all(d["variant"] == v and d["rig"] == RIG_ID for d in decoded)
            seqs = [d["seq"] for d in decoded]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert not [m for m in beta.snapshot() if "/slot/" in m.topic]
        # A tester who subscribes now gets the retained state (beta may have subscribed before
        # the daemon connected, and live messages carry no retain flag).
        state = h.probe("beta", [f"p1/{RIG_ID}/status", f"p1/{RIG_ID}/variants"])
        assert state.wait_for(lambda ms: len({m.topic for m in ms if m.retain}) == 2, 10)
        retained = {m.topic: m for m in state.snapshot() if m.retain}
        assert json.loads(retained[f"p1/{RIG_ID}/status"].payload)["state"] == "online"
        catalogue = json.loads(retained[f"p1/{RIG_ID}/variants"].payload)
        assert [e["id"] for e in catalogue["variants"]] == variants
        assert wait_until(
            lambda: all(
                f"p1/{RIG_ID}/health/{v}" in {m.topic for m in beta.snapshot()} for v in variants
            ),
            15,
        )

        assert h.notify is not None
        assert h.notify.having("READY", "1")
        assert wait_until(lambda: len(h.notify.having("WATCHDOG", "1")) >= 2, 10)
        assert wait_until(lambda: all(p["state"] == "up" for p in h.status()["ports"].values()), 10)
        every = f"{len(variants)}/{len(variants)} ports up; broker connected;"
        assert wait_until(
            lambda: any(every in m["STATUS"] for m in h.notify.having("STATUS")), 10
        ), [m["STATUS"] for m in h.notify.having("STATUS")][-3:]

        code, took = h.stop_daemon()
        assert code == 0, h.log()
        assert took < 5.0
        assert h.notify.having("STOPPING", "1")
        late = h.probe("beta", [f"p1/{RIG_ID}/status"])
        assert wait_until(lambda: bool(late.snapshot()), 10)
        assert json.loads(late.snapshot()[-1].payload)["state"] == "offline"
        late.stop()
        acme.stop()
        beta.stop()


def test_reload_refuses_bad_config_then_applies_a_good_one_as_a_diff() -> None:
    """SIGHUP with a bad file keeps the old config; a fixed file is applied within 5 s."""
    with GatewayHarness() as h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        keep, drop = (m.id for m in h.models)
        assert wait_until(lambda: len(telegrams_of(acme, "acme", drop)) >= 2, 30), h.log()
        good = h.variants_file.read_text()
        assert h.notify is not None

        h.variants_file.write_text(good.replace(f'id = "{drop}"', 'id = "a/b"'))
        readies = len(h.notify.having("READY", "1"))
        h.signal(signal.SIGHUP)
        assert wait_until(lambda: len(h.notify.having("READY", "1")) > readies, 10), h.log()
        reloading = h.notify.having("RELOADING", "1")
        assert reloading and int(reloading[-1]["MONOTONIC_USEC"]) > 0
        assert wait_until(lambda: h.last_reload_ok() is False, 5)
        problems = h.status()["config"]["last_reload"]["problems"]
        assert any("variants.toml: variant[" in p and ".id:" in p for p in problems)
        before = len(telegrams_of(acme, "acme", drop))
        assert wait_until(lambda: len(telegrams_of(acme, "acme", drop)) > before + 1, 10)

        # A valid change without a signal: the dropped variant goes, the other is untouched.
        blocks = good.split("\n\n")
        h.variants_file.write_text("\n\n".join(b for b in blocks if f'id = "{drop}"' not in b))
        assert wait_until(lambda: h.last_reload_ok() is True, 10)
        assert wait_until(lambda: drop not in h.status()["ports"], 5)
        time.sleep(1.5)
        gone = len(telegrams_of(acme, "acme", drop))
        kept = len(telegrams_of(acme, "acme", keep))
        assert wait_until(lambda: len(telegrams_of(acme, "acme", keep)) >= kept + 3, 15)
        assert len(telegrams_of(acme, "acme", drop)) == gone

        seqs = sim_sequence(h, keep, telegrams_of(acme, "acme", keep))
        assert None not in seqs
        numbers = [s for s in seqs if s is not None]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (
            "the untouched port lost or reordered telegrams across the reloads"
        )
        events = [e.get("event") for e in h.log_events()]
        assert "config refused, still running the previous one" in events
        assert "config reloaded" in events
        acme.stop()


def test_run_with_an_invalid_config_exits_non_zero(tmp_path: Path) -> None:
    """`run` refuses to start on an invalid config, naming file and field, exit 2."""
    cfg = tmp_path / "g.toml"
    cfg.write_text('[rig]\nid = "Bad Id"\n')
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{cfg}: rig.id:" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_exit_zero(sig: int) -> None:
    """SIGINT and SIGTERM both stop the daemon cleanly with exit 0."""
    with GatewayHarness(watchdog_usec=None) as h:
        assert h.proc is not None
        h.signal(sig)
        assert h.proc.wait(10) == 0, h.log()


def test_bad_crc_frames_reach_the_holder_as_invalid_evidence() -> None:
    """A frame with a bad CRC goes to the holder's invalid topic with its exact bytes."""
    with GatewayHarness() as h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        variant = h.models[0].id
        assert wait_until(lambda: len(telegrams_of(acme, "acme", variant)) >= 1, 30), h.log()
        h.rig.meter(variant).corrupt_crc(2)
        assert wait_until(lambda: len(telegrams_of(acme, "acme", variant, "invalid")) >= 2, 15)
        for payload in telegrams_of(acme, "acme", variant, "invalid"):
            data = json.loads(payload)
            raw = data["raw"].encode("latin-1")
            assert raw.startswith(b"/") and raw.endswith(b"\r\n")
            assert data["reason"].startswith("crc mismatch")
            assert data["variant"] == variant and isinstance(data["seq"], int)
        assert wait_until(lambda: h.status()["gateway"]["invalid_crc"] >= 2, 5)
        acme.stop()


def test_run_exits_non_zero_when_the_spool_cannot_be_opened(tmp_path: Path) -> None:
    """A spool path that is a file, not a folder, is a fatal start-up error: exit 1, said why."""
    (tmp_path / "spool").write_text("not a folder")
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        '[rig]\nid = "rig-a"\n[mqtt]\nport = 1\n[spool]\ndir = "spool"\n'
        '[status]\nfile = "status.json"\n[log]\nformat = "json"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert '"event": "cannot start"' in out.stderr
