"""Following the lab's schedule, pure: each version read whole, judged against the one applied;
the answers' exact bytes; the copy kept on disk."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ScheduleError, ScheduleStoreError
from gateway.publish.follow import MAX_REASON, Follower, read_version
from gateway.publish.payload import applied_payload
from gateway.publish.schedulefile import ScheduleFile

T0 = datetime(2026, 12, 14, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)


def slot(holder: str, start: datetime, end: datetime) -> dict[str, str]:
    """A slot as the lab writes it (its local offset)."""
    return {"holder": holder, "start": start.isoformat(), "end": end.isoformat()}


def body(version: Any = 1, *slots: dict[str, Any], rig: str = "rig-a", **extra: Any) -> bytes:
    """A schedule payload."""
    return json.dumps({"rig": rig, "version": version, "slots": list(slots), **extra}).encode()


def test_a_valid_version_is_read_whole() -> None:
    """Rig, version and slots; times with any offset; slots sorted by start."""
    payload = body(
        14,
        slot("beta", T0 + 24 * H, T0 + 46 * H),
        {
            "holder": "acme",
            "start": "2026-12-14T09:00:00+01:00",
            "end": "2026-12-15T07:00:00+01:00",
        },
    )
    version = read_version("rig-a", payload)
    assert version.version == 14 and version.payload == payload
    assert [s.holder for s in version.schedule.slots] == ["acme", "beta"]
    assert version.schedule.holder_at(T0) == "acme"
    assert version.schedule.holder_at(T0 + 22 * H) is None
    assert read_version("rig-a", body(0)).schedule.slots == ()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (body("3"), "version must be an integer"),
        (body(True), "version must be an integer"),
        (body(-1), "version must be an integer"),
        (body(2.0), "version must be an integer"),
        (body(1, rig="rig-b"), "rig 'rig-b' is not this rig (rig-a)"),
        (json.dumps({"rig": "rig-a", "version": 1}).encode(), "no slots"),
        (json.dumps({"rig": "rig-a", "version": 1, "slots": {}}).encode(), "must be a list"),
        (body(1, "acme"), "slot[0] must be an object"),
        (body(1, slot("Bad Name", T0, T0 + H)), "slot[0].holder"),
        (body(1, slot("a/b", T0, T0 + H)), "slot[0].holder"),
        (body(1, {"holder": 7, "start": "x", "end": "y"}), "slot[0].holder must be a name"),
        (body(1, {"holder": "acme", "end": T0.isoformat()}), "slot[0].start must be"),
        (body(1, {"holder": "acme", "start": "tomorrow", "end": "x"}), "not an RFC 3339 time"),
        (body(1, {"holder": "acme", "start": "2026-12-14T08:00", "end": "x"}), "no UTC offset"),
        (body(1, slot("acme", T0, T0)), "is not before end"),
        (body(1, slot("acme", T0, T0 + 2 * H), slot("beta", T0 + H, T0 + 3 * H)), "overlaps"),
    ],
)
def test_a_bad_version_is_refused_whole_with_the_reason(payload: bytes, reason: str) -> None:
    """Every part is checked; the error says what is wrong."""
    with pytest.raises(ScheduleError) as caught:
        read_version("rig-a", payload)
    assert reason in str(caught.value)


def test_every_problem_of_the_slots_is_named() -> None:
    """Two bad slots: both named in one refusal."""
    payload = body(1, slot("Bad", T0, T0 + H), slot("acme", T0 + 2 * H, T0 + H))
    with pytest.raises(ScheduleError) as caught:
        read_version("rig-a", payload)
    assert "slot[0].holder" in str(caught.value) and "not before end" in str(caught.value)


def test_the_follower_applies_new_versions_and_says_what_changed() -> None:
    """The first version changes the slots; the same one again changes nothing and needs no
    write; a new version with the same slots is kept but changes nothing; a move changes."""
    follower = Follower("rig-a")
    assert follower.version is None and follower.schedule.slots == ()
    assert follower.answer() == b'{"version":null}'
    first = body(1, slot("acme", T0, T0 + 22 * H))
    verdict = follower.offer(first)
    assert verdict is not None and verdict.taken is not None
    assert (verdict.answer, verdict.version, verdict.refused) == (b'{"version":1}', 1, None)
    assert verdict.changed and verdict.keep
    again = follower.offer(first)
    assert again is not None and again.taken is not None
    assert not again.changed and not again.keep and again.answer == b'{"version":1}'
    same_slots = follower.offer(body(2, slot("acme", T0, T0 + 22 * H)))
    assert same_slots is not None and same_slots.keep and not same_slots.changed
    moved = follower.offer(body(3, slot("acme", T0 + H, T0 + 23 * H)))
    assert moved is not None and moved.changed and follower.version == 3
    assert follower.answer() == b'{"version":3}' and follower.refused is None
    emptied = follower.offer(body(4))
    assert emptied is not None and emptied.changed and follower.schedule.slots == ()


def test_a_refused_version_changes_nothing_and_says_why() -> None:
    """A bad version keeps the applied one; the answer carries the refused version and the
    reason; a version that cannot be read is answered with the applied one."""
    follower = Follower("rig-a")
    follower.offer(body(5, slot("acme", T0, T0 + H)))
    applied = follower.applied
    verdict = follower.offer(
        body(6, slot("acme", T0, T0 + 2 * H), slot("beta", T0 + H, T0 + 3 * H))
    )
    assert verdict is not None and verdict.taken is None and not verdict.changed
    assert verdict.version == 6 and verdict.refused is not None and "overlaps" in verdict.refused
    assert json.loads(verdict.answer) == {"version": 6, "refused": verdict.refused}
    assert verdict.refused.startswith("version 6: ")
    assert follower.applied is applied and follower.refused == verdict.refused
    junk = follower.offer(b"{")
    assert junk is not None and json.loads(junk.answer) == {"version": 5, "refused": "not JSON"}
    assert Follower("rig-a").offer(b"{") is not None
    assert json.loads(Follower("rig-a").offer(b"[]").answer) == {  # type: ignore[union-attr]
        "version": None,
        "refused": "not a JSON object",
    }
    accepted = follower.offer(body(6, slot("acme", T0, T0 + H)))  # the same number, now valid
    assert accepted is not None and accepted.taken is not None and follower.refused is None


def test_a_lower_version_is_refused_and_answered_with_the_applied_one() -> None:
    """The lab reads `applied` to republish above it: the answer's version is the applied
    one, whatever the lower version holds (valid or not)."""
    follower = Follower("rig-a")
    follower.offer(body(10, slot("acme", T0, T0 + H)))
    for payload in (body(9, slot("beta", T0, T0 + H)), body(3, slot("Bad", T0, T0))):
        verdict = follower.offer(payload)
        assert verdict is not None and verdict.taken is None and verdict.version == 10
        lower = payload.split(b'"version": ')[1].split(b",")[0].decode()
        expected = f"version {lower} is lower than the applied version 10"
        assert json.loads(verdict.answer) == {"version": 10, "refused": expected}
    assert follower.version == 10 and follower.schedule.holder_at(T0) == "acme"


def test_an_empty_payload_is_no_version() -> None:
    """The retained schedule cleared: nothing to judge, nothing answered, nothing changed."""
    follower = Follower("rig-a")
    follower.offer(body(1, slot("acme", T0, T0 + H)))
    assert follower.offer(b"") is None and follower.version == 1


def test_a_long_reason_is_cut() -> None:
    """A hundred bad slots make one bounded reason."""
    payload = body(1, *[slot(f"Bad{i}", T0, T0 + H) for i in range(100)])
    verdict = Follower("rig-a").offer(payload)
    assert verdict is not None and verdict.refused is not None
    assert len(verdict.refused) == MAX_REASON and verdict.refused.endswith("...")


def test_the_answers_exact_bytes() -> None:
    """Compact JSON; a reason UTF-8 cannot carry (a lone surrogate) is escaped, not lost."""
    assert applied_payload(14) == b'{"version":14}'
    assert applied_payload(None) == b'{"version":null}'
    assert applied_payload(3, 'bad "x"') == b'{"version":3,"refused":"bad \\"x\\""}'
    assert json.loads(applied_payload(3, "\ud800"))["refused"] == "\\ud800"


def test_the_kept_copy_is_replaced_whole(tmp_path: Path) -> None:
    """Saved and read back byte for byte, in a folder made on the way; no temporary file
    left; an unwritable place raises ScheduleStoreError."""
    kept = ScheduleFile(tmp_path / "spool")
    assert kept.load() is None
    kept.save(b'{"version":1}')
    kept.save(b'{"version":2}')
    assert kept.load() == b'{"version":2}'
    assert sorted(os.listdir(tmp_path / "spool")) == ["schedule.json"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ScheduleStoreError, match="cannot write"):
        ScheduleFile(blocker).save(b"{}")
    (tmp_path / "dir" / "schedule.json").mkdir(parents=True)
    with pytest.raises(ScheduleStoreError, match="cannot read"):
        ScheduleFile(tmp_path / "dir").load()
