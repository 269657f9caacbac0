"""The meter watch: what counts as a change, and when a code counts as appeared or gone."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import VariantConfig
from gateway.daemon.observe import MeterWatch, Observed, operator_change
from gateway.p1.telegram import Telegram

S = 1_000_000_000
BASE = {
    "0-0:96.1.4": "50217",
    "0-0:96.1.1": "3153414733313031303231363035",
    "1-0:1.8.1": "000123.456",
    "1-0:1.7.0": "00.244",
    "0-1:24.1.0": "003",
    "0-1:96.1.1": "37464C4F32313139303333373331",
}


def tg(
    values: dict[str, str] | None = None, *, header: str = "FLU5\\253769484_A", spec: str = "V5"
) -> Telegram:
    """A decoded telegram with these objects (code -> value)."""
    objects: dict[str, Any] = {c: {"name": None, "value": v} for c, v in (values or BASE).items()}
    return Telegram(b"/x!", spec, header, None, objects)


def with_(code: str, value: str | None) -> dict[str, str]:
    """BASE with one code's value changed (None: the code removed)."""
    out = {**BASE, code: value or ""}
    if value is None:
        del out[code]
    return out


def test_the_first_telegram_sets_the_baseline_and_the_same_one_changes_nothing() -> None:
    """The first telegram gives the observed state without changes; repeats give None."""
    watch = MeterWatch()
    first = watch.feed(tg(), 0)
    assert first is not None
    observed, changes = first
    assert changes == []
    assert observed.firmware == {"0-0:96.1.4": "50217"}
    assert observed.ids == {"0-0:96.1.1": BASE["0-0:96.1.1"], "0-1:96.1.1": BASE["0-1:96.1.1"]}
    assert observed.codes == tuple(sorted(BASE))
    assert all(watch.feed(tg(), i * S) is None for i in range(1, 5))


def test_a_version_change_is_one_firmware_change_with_before_and_after() -> None:
    """A new version line shows at once, once; the telegrams after it change nothing."""
    watch = MeterWatch()
    watch.feed(tg(), 0)
    new = with_("0-0:96.1.4", "50221")
    result = watch.feed(tg(new), S)
    assert result is not None
    observed, changes = result
    assert [(c.kind, c.before, c.after) for c in changes] == [
        ("firmware", {"0-0:96.1.4": "50217"}, {"0-0:96.1.4": "50221"})
    ]
    assert "50217 -> 50221" in changes[0].text
    assert observed.firmware == {"0-0:96.1.4": "50221"}
    assert watch.feed(tg(new), 2 * S) is None


def test_header_id_and_spec_changes_have_their_kinds() -> None:
    """A new header or equipment id is `meter`; another decoding spec is `spec`."""
    watch = MeterWatch()
    watch.feed(tg(), 0)
    result = watch.feed(tg(header="ISK5\\2M550E-1012", spec="BELGIUM_FLUVIUS"), S)
    assert result is not None
    kinds = {c.kind: c for c in result[1]}
    assert set(kinds) == {"meter", "spec"}
    assert kinds["meter"].before == {"header": "FLU5\\253769484_A"}
    assert kinds["spec"].after == "BELGIUM_FLUVIUS"
    mbus = watch.feed(tg(with_("0-1:96.1.1", "00"), spec="BELGIUM_FLUVIUS"), 2 * S)
    assert mbus is not None and [c.kind for c in mbus[1]] == ["meter"]


def test_a_new_code_counts_once_it_stayed_long_enough() -> None:
    """A code present in `streak` telegrams over `hold` seconds appears, in one notice."""
    watch = MeterWatch(streak=3, hold_ns=10 * S)
    watch.feed(tg(), 0)
    more = {**BASE, "1-0:2.7.0": "00.000"}
    results = [watch.feed(tg(more), t * S) for t in (1, 6, 10, 12, 16)]
    assert results[0] is None and results[1] is None  # 2 telegrams: too few
    assert results[2] is None  # 3 telegrams but only 9 s since t=1
    assert results[3] is not None
    observed, changes = results[3]
    assert [c.kind for c in changes] == ["codes"]
    assert "appeared 1-0:2.7.0" in changes[0].text
    assert "1-0:2.7.0" in observed.codes and "1-0:2.7.0" in changes[0].after
    assert "1-0:2.7.0" not in changes[0].before
    assert results[4] is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_a_flipping_code_never_floods(pattern: list[bool]) -> None:
    """A code that is absent at least every other telegram never counts as appeared."""
    watch = MeterWatch(streak=2, hold_ns=0)
    watch.feed(tg(), 0)
    more = {**BASE, "1-0:2.7.0": "00.000"}
    flipping = [p and (i == 0 or not pattern[i - 1]) for i, p in enumerate(pattern)]
    for i, present in enumerate(flipping, start=1):
        assert watch.feed(tg(more if present else BASE), i * S) is None


def test_a_code_gone_for_long_enough_counts_as_gone() -> None:
    """A code absent in `streak` telegrams counts as gone."""
    watch = MeterWatch(streak=2, hold_ns=0)
    watch.feed(tg(), 0)
    fewer = with_("1-0:1.7.0", None)
    assert watch.feed(tg(fewer), S) is None
    result = watch.feed(tg(fewer), 2 * S)
    assert result is not None and "gone 1-0:1.7.0" in result[1][0].text


def test_a_watch_resumed_from_its_stored_state_posts_nothing_for_the_same_meter() -> None:
    """The observed state survives as JSON: a watch started from it sees no change."""
    first = MeterWatch().feed(tg(), 0)
    assert first is not None
    stored = Observed.from_json(first[0].as_json())
    assert stored == first[0]
    watch = MeterWatch(stored)
    assert all(watch.feed(tg(), i * S) is None for i in range(40))


def test_an_operator_change_says_what_changed_without_the_port_path() -> None:
    """Model and spec changes are shown; a new port is told without its path."""
    old = VariantConfig(id="v1", port="/dev/ttyUSB0", model="T211")
    assert operator_change(old, old) is None
    new = VariantConfig(id="v1", port="/dev/ttyUSB1", model="T211-D", spec="V5")
    change = operator_change(old, new)
    assert change is not None and change.kind == "operator"
    assert change.before == {"model": "T211", "spec": "auto"}
    assert change.after == {"model": "T211-D", "spec": "V5"}
    assert "another port" in change.text and "ttyUSB" not in change.text
