"""All evidence to the holder, and public health that names nothing of the rig's host: the
daemon end to end, with a real broker and its ACL, a virtual rig on ptys and real signals."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.sim import NoiseKind
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe, wait_until


def invalid_of(probe: MqttProbe, variant: str, code: str | None = None) -> list[dict[str, Any]]:
    """The holder acme's invalid payloads of one variant (with one reason code, if given)."""
    topic = f"p1/{RIG_ID}/slot/acme/{variant}/invalid"
    out = [json.loads(m.payload) for m in probe.snapshot(lambda t: t == topic)]
    return [p for p in out if code is None or p["reason_code"] == code]


def raw_of(payload: dict[str, Any]) -> bytes:
    """An invalid payload's exact bytes."""
    raw: bytes = payload["raw"].encode("latin-1")
    return raw


def port_status(h: GatewayHarness, variant: str) -> dict[str, Any]:
    """A port's entry in the status file ({} until the daemon lists it)."""
    return dict(h.status()["ports"].get(variant, {}))


def wall(text: str) -> float:
    """An RFC 3339 time as seconds since the epoch."""
    return datetime.fromisoformat(text).timestamp()


def test_truncated_and_oversize_frames_reach_the_holder_as_invalid_evidence() -> None:
    """A telegram cut short by the next one's '/', one whose line goes quiet, and a run over
    the size bound each reach the holder's invalid topic with their reason code, exact bytes
    and whole length; the quiet one is received when its last byte was, not when it was cut."""
    with GatewayHarness() as h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#"])
        cut, quiet = (m.id for m in h.models)
        telegrams = {f"p1/{RIG_ID}/slot/acme/{v}/telegram" for v in (cut, quiet)}
        assert wait_until(lambda: telegrams <= {m.topic for m in acme.snapshot()}, 30), h.log()
        slash, silent = h.rig.meter(cut), h.rig.meter(quiet)
        slash.set_rate(4)  # the next '/' follows well within a second
        slash.truncate(1)
        sent = silent.stats().telegrams
        silent.truncate(1)
        assert wait_until(lambda: silent.stats().telegrams > sent, 10)
        silent.pause()  # nothing follows the cut telegram: the line goes quiet inside it
        assert wait_until(lambda: invalid_of(acme, cut, "truncated"), 15), h.log()
        assert wait_until(lambda: invalid_of(acme, quiet, "truncated"), 15), h.log()
        topic = f"p1/{RIG_ID}/slot/acme/{quiet}/invalid"
        (message,) = acme.snapshot(lambda t: t == topic)
        arrived = message.at + (time.time() - time.monotonic())  # the probe's clock is monotonic

        slash.pause()
        assert wait_until(lambda: slash.stats().backlog == 0, 10)
        slash.inject_noise(20_000, NoiseKind.UNTERMINATED)
        assert wait_until(lambda: slash.stats().noise_pending == 0, 15)
        assert wait_until(lambda: slash.stats().backlog == 0, 10)
        slash.resume()  # the next telegram's '/' ends the run
        assert wait_until(lambda: invalid_of(acme, cut, "oversize"), 15), h.log()
        assert wait_until(lambda: port_status(h, cut).get("oversize") == 1, 10)
        acme.stop()

    (by_slash,) = invalid_of(acme, cut, "truncated")
    length = by_slash["length"]
    assert by_slash["reason"] == f"truncated: cut short by a new '/' after {length} bytes"
    (by_quiet,) = invalid_of(acme, quiet, "truncated")
    assert by_quiet["reason"] == f"truncated: no byte for 1 s after {by_quiet['length']} bytes"
    for payload in (by_slash, by_quiet):
        raw = raw_of(payload)
        assert raw.startswith(b"/") and b"!" not in raw and payload["length"] == len(raw)
        assert payload["variant"] in (cut, quiet) and isinstance(payload["seq"], int)
    # Received when its last byte was read: it was judged cut 1 s or more after that.
    assert wall(by_quiet["received_at"]) <= arrived - 0.9
    (oversize,) = invalid_of(acme, cut, "oversize")
    raw = raw_of(oversize)
    assert oversize["length"] == 20_000 and len(raw) == 16 * 1024
    assert raw.startswith(b"/") and raw.count(b"/") == 1 and b"!" not in raw
    assert oversize["reason"] == (
        "oversize: no end within 16384 bytes; 20000 bytes up to the next '/'"
    )
    assert [p["reason_code"] for p in invalid_of(acme, quiet)] == ["truncated"]


def health_of(probe: MqttProbe, variant: str) -> list[dict[str, Any]]:
    """The public health payloads of one variant a tester received, in order."""
    topic = f"p1/{RIG_ID}/health/{variant}"
    return [json.loads(m.payload) for m in probe.snapshot(lambda t: t == topic) if m.payload]


def test_public_health_names_no_host_path_and_counts_each_slot_afresh() -> None:
    """Health on the broker holds neither the rig's symlink nor its pty paths (the status file
    does), says 'unplugged' while the meter is; at a new holder's slot its slot counters
    start again from zero while the lifetime ones run on."""
    start = datetime.now(UTC) - timedelta(hours=1)
    with GatewayHarness(slots=[("acme", start, start + timedelta(hours=3))]) as h:
        beta = h.probe("beta", [f"p1/{RIG_ID}/health/#"])
        variant = h.models[0].id
        meter = h.rig.meter(variant)
        link = str(h.dir / "ports" / variant)
        ptys = {meter.stats().pty}
        meter.corrupt_crc(2)
        assert wait_until(lambda: port_status(h, variant).get("crc_errors", 0) >= 2, 15)
        meter.unplug(1.0)
        assert wait_until(
            lambda: any(p["error"] == "unplugged" for p in health_of(beta, variant)), 10
        ), h.log()
        assert wait_until(lambda: meter.stats().plugged, 10)
        ptys.add(meter.stats().pty)
        assert wait_until(lambda: health_of(beta, variant)[-1]["state"] == "up", 10)
        assert wait_until(lambda: port_status(h, variant).get("reconnects") == 1, 10)
        assert port_status(h, variant)["port"] == link  # the technician's full view

        edge = datetime.now(UTC) + timedelta(seconds=2)
        h.write_slots([("acme", start, edge), ("beta", edge, start + timedelta(hours=3))])
        h.signal(signal.SIGHUP)
        assert wait_until(lambda: h.last_reload_ok() is True, 10), h.log()
        assert wait_until(
            lambda: any(
                p["slot_counters"] and wall(p["slot_counters"]["since"]) >= edge.timestamp()
                for p in health_of(beta, variant)
            ),
            15,
        ), h.log()
        beta.stop()

    payloads = health_of(beta, variant)
    texts = [json.dumps(p) for p in payloads]
    for path in {link, *ptys, str(h.dir)}:
        assert path and not [t for t in texts if path in t], path
    assert not [t for t in texts if "/dev/" in t]
    assert not [p for p in payloads if "port" in p or "last_error" in p]
    down = next(p for p in payloads if p["error"] == "unplugged")
    assert down["state"] == "down" and down["slot_counters"]["crc_errors"] >= 2
    after = next(p for p in payloads if wall(p["slot_counters"]["since"]) >= edge.timestamp())
    assert after["crc_errors"] >= 2 and after["reconnects"] == 1  # lifetime
    slot = after["slot_counters"]
    assert (slot["crc_errors"], slot["reconnects"], slot["open_failures"]) == (0, 0, 0)
    assert slot["telegrams"] < after["telegrams"]
