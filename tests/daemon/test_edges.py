"""Slot edges end to end: the daemon, a real mosquitto with the shipped ACL, real 2-second slots."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.sim.rig import VirtualRig
from tests.daemon.harness import RIG_ID, GatewayHarness
from tests.support.mosquitto import MqttProbe, Received

SLOT = timedelta(seconds=2)


def stamp(moment: datetime) -> str:
    """A whole-second slot bound as the gateway writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(text: str) -> datetime:
    """An RFC 3339 time from a payload."""
    return datetime.fromisoformat(text)


def of_holder(probe: MqttProbe, holder: str, kind: str) -> list[Received]:
    """A probe's messages on the holder's `kind` topics (telegram, session, schedule ...)."""
    return [
        m
        for m in probe.snapshot()
        if m.topic.startswith(f"p1/{RIG_ID}/slot/{holder}/") and m.topic.endswith("/" + kind)
    ]


def sessions_of(probe: MqttProbe, holder: str) -> list[dict[str, Any]]:
    """The holder's messages in arrival order, cut at its session markers: each session's
    start marker, the telegrams and raws between, and its end marker (None while open)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    prefix = f"p1/{RIG_ID}/slot/{holder}/"
    for m in probe.snapshot():
        if not m.topic.startswith(prefix):
            continue
        kind = m.topic.rsplit("/", 1)[1]
        if kind == "session":
            marker = json.loads(m.payload)
            if marker["event"] == "start":
                assert current is None, f"{holder}: a start inside a session"
                current = {"start": marker, "telegrams": [], "raws": [], "end": None}
                out.append(current)
            else:
                assert current is not None, f"{holder}: an end without a start"
                assert marker["slot"] == current["start"]["slot"]
                current["end"] = marker
                current = None
        elif kind in ("telegram", "raw"):
            assert current is not None, f"{holder}: {m.topic} outside its session"
            if kind == "telegram":
                current["telegrams"].append(json.loads(m.payload))
            else:
                current["raws"].append(m)
    return out


def test_a_handover_between_two_holders_with_real_two_second_slots() -> None:
    """acme, beta, acme again, 2 s each: each holder is told its own slots only; its `start`
    comes before its first telegram and its `end` after its last; prev_seq chains each
    session; nothing crosses."""
    far = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    h = GatewayHarness(slots=[("acme", far, far + timedelta(hours=1))])
    h.rig = VirtualRig(h.models, link_dir=h.dir / "ports", rate=4.0)
    with h:
        acme = h.probe("acme", [f"p1/{RIG_ID}/slot/acme/#", f"p1/{RIG_ID}/calendar"])
        beta = h.probe("beta", ["p1/#"])
        t0 = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        slots = [("acme", t0, t0 + SLOT), ("beta", t0 + SLOT, t0 + 2 * SLOT)]
        slots.append(("acme", t0 + 2 * SLOT, t0 + 3 * SLOT))
        h.write_slots(slots)
        h.signal(signal.SIGHUP)

        def done() -> bool:
            ends = [
                s["end"]
                for who in (("acme", acme), ("beta", beta))
                for s in sessions_of(who[1], who[0])
            ]
            return len(ends) == 3 and None not in ends

        assert acme.wait_for(lambda _: done(), 30), h.log()[-3000:]

        # Each holder is told its own current and coming slots only: at first, after the
        # reload, and as each slot ends. The calendar gives the busy times without names.
        def told(probe: MqttProbe, holder: str) -> list[list[tuple[str, str]]]:
            payloads = [json.loads(m.payload) for m in of_holder(probe, holder, "schedule")]
            assert all(p["rig"] == RIG_ID and p["holder"] == holder for p in payloads)
            return [[(x["start"], x["end"]) for x in p["slots"]] for p in payloads]

        a1, b1, a2 = [(stamp(start), stamp(end)) for _, start, end in slots]
        assert told(acme, "acme") == [
            [(stamp(far), stamp(far + timedelta(hours=1)))],
            [a1, a2],
            [a2],
            [],
        ]
        assert told(beta, "beta") == [[b1], []]
        calendar = [
            [(x["start"], x["end"]) for x in json.loads(m.payload)["busy"]]
            for m in acme.snapshot()
            if m.topic == f"p1/{RIG_ID}/calendar"
        ]
        assert calendar[-4:] == [[(a1[0], a2[1])], [(b1[0], a2[1])], [a2], []]
        assert not [m for m in beta.snapshot() if "/slot/acme/" in m.topic]

        # Sessions: bracketed, inside their slot, chained.
        got = {"acme": sessions_of(acme, "acme"), "beta": sessions_of(beta, "beta")}
        assert [len(got["acme"]), len(got["beta"])] == [2, 1]
        spans = {"acme": [slots[0], slots[2]], "beta": [slots[1]]}
        variants = {m.id for m in h.models}
        for holder, sessions in got.items():
            for session, (_, start, end) in zip(sessions, spans[holder], strict=True):
                slot = {"start": stamp(start), "end": stamp(end)}
                assert session["start"]["slot"] == slot and session["end"]["slot"] == slot
                assert when(session["end"]["at"]) >= end
                telegrams = session["telegrams"]
                assert {t["variant"] for t in telegrams} == variants, (holder, session)
                for t in telegrams:
                    assert start <= when(t["received_at"]) < end, (holder, t)
                last: dict[str, int] = {}
                for t in telegrams:
                    assert t["prev_seq"] == last.get(t["variant"]), (holder, t)
                    last[t["variant"]] = t["seq"]
                for raw in session["raws"]:  # the user property: absent when null
                    twin = next(t for t in telegrams if str(t["seq"]) == raw.prop("seq"))
                    prev = twin["prev_seq"]
                    assert raw.prop("prev_seq") == (None if prev is None else str(prev))
