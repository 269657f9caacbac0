"""What each variant's meter says about itself, and when that changes (pure: no IO, no clock).

The watch runs on the reader thread for every telegram, so the common case (nothing changed)
is cheap: the telegram's codes compared with the last telegram's as sets (in C), the few
watched lines' values with the last ones. Work is done only on a change.

Watched: the header line and the equipment ids (`0-n:96.1.1`, `0-n:96.1.0`, n = 0 for the
meter, 1-4 for its M-Bus devices: kind `meter`), the version lines (`0-n:96.1.4`,
`1-3:0.2.8`: kind `firmware`), the spec that decoded it (`spec`), and the set of OBIS codes
(`codes`). Any change of the first three is reported at the first telegram that shows it.
The set of codes varies between telegrams (lines come and go), so a code counts as appeared
(or gone) only once it has been present (or absent) in CODES_STREAK consecutive telegrams
spanning at least CODES_HOLD_S seconds: a code that flips back and forth never does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import VariantConfig
from gateway.p1.telegram import Telegram

#: Consecutive telegrams a code must stay appeared (or gone) before it counts.
CODES_STREAK = 6
#: Seconds it must stay so, as well (a 1 s meter: 30 telegrams; a 10 s meter: 6).
CODES_HOLD_S = 30.0

_METER = re.compile(r"^0-\d:96\.1\.[01]$")
_FIRMWARE = re.compile(r"^(0-\d:96\.1\.4|1-3:0\.2\.8)$")


def _kind_of_code(code: str) -> str | None:
    """`meter`, `firmware` or None: which watched line an OBIS code is."""
    if _METER.match(code):
        return "meter"
    if _FIRMWARE.match(code):
        return "firmware"
    return None


@dataclass(frozen=True)
class Observed:
    """What a variant's meter last showed of itself."""

    header: str
    ids: Mapping[str, str]
    firmware: Mapping[str, str]
    spec: str
    codes: tuple[str, ...]
    """Sorted."""

    def as_json(self) -> dict[str, Any]:
        """The `observed` block of the variant catalogue (and the stored form)."""
        return {
            "header": self.header,
            "ids": dict(self.ids),
            "firmware": dict(self.firmware),
            "spec": self.spec,
            "codes": list(self.codes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Observed:
        """Read back `as_json`'s form (raises KeyError, TypeError on a malformed one)."""
        return cls(
            str(data["header"]),
            {str(k): str(v) for k, v in dict(data["ids"]).items()},
            {str(k): str(v) for k, v in dict(data["firmware"]).items()},
            str(data["spec"]),
            tuple(sorted(str(c) for c in data["codes"])),
        )


@dataclass(frozen=True)
class Change:
    """One thing the meter showed changed: a notice's kind, text, before and after."""

    kind: str
    text: str
    before: Any
    after: Any


def _value_text(obj: Mapping[str, Any]) -> str:
    """A watched line's value as text."""
    return str(obj.get("value"))


@dataclass
class MeterWatch:
    """One variant's watch: fed each decoded telegram, says what changed (if anything)."""

    observed: Observed | None = None
    streak: int = CODES_STREAK
    hold_ns: int = int(CODES_HOLD_S * 1e9)
    _keys: frozenset[str] = frozenset({"?"})
    _watched: tuple[str, ...] = ()
    _last_sig: tuple[Any, ...] | None = None
    _codes: frozenset[str] = frozenset()
    _pending: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per code whose presence differs from the observed set: (telegrams so far, since)."""

    def __post_init__(self) -> None:
        if self.observed is not None:
            self._codes = frozenset(self.observed.codes)

    def feed(self, telegram: Telegram, now_ns: int) -> tuple[Observed, list[Change]] | None:
        """The new observed state and its changes, or None when nothing changed. The first
        telegram ever seen sets the baseline (no changes)."""
        objects = telegram.objects
        if objects.keys() != self._keys:  # (a set comparison in C: cheap)
            self._keys = frozenset(objects)
            self._watched = tuple(c for c in objects if _kind_of_code(c) is not None)
        codes = self._keys
        watched = [(c, _value_text(objects[c])) for c in self._watched]
        sig = (telegram.header, telegram.spec, *watched)
        old = self.observed
        if old is None:
            self.observed = _observed_of(telegram, watched, codes)
            self._last_sig, self._codes = sig, codes
            return self.observed, []
        same_lines = sig == self._last_sig
        if same_lines and codes == self._codes and not self._pending:
            return None
        new = old if same_lines else _observed_of(telegram, watched, frozenset(old.codes))
        changes = [] if same_lines else _line_changes(old, new)
        settled = self._settle(codes, now_ns)
        if settled is not None:
            appeared = sorted(settled - self._codes)
            gone = sorted(self._codes - settled)
            after = tuple(sorted(settled))
            changes.append(
                Change("codes", _codes_text(appeared, gone), list(new.codes), list(after))
            )
            new = replace(new, codes=after)
            self._codes = settled
        self._last_sig = sig
        if not changes:
            return None
        self.observed = new
        return new, changes

    def _settle(self, codes: frozenset[str], now_ns: int) -> frozenset[str] | None:
        """Count the codes that differ from the observed set; the new set once any of them
        has stayed so long enough (the others still pending keep their count)."""
        differ = codes ^ self._codes
        pending = self._pending
        for code in list(pending):
            if code not in differ:
                del pending[code]  # back as observed: its count starts anew next time
        ripe: set[str] = set()
        for code in differ:
            count, since = pending.get(code, (0, now_ns))
            count += 1
            if count >= self.streak and now_ns - since >= self.hold_ns:
                ripe.add(code)
                pending.pop(code, None)
            else:
                pending[code] = (count, since)
        if not ripe:
            return None
        return self._codes ^ ripe


def _observed_of(
    telegram: Telegram, watched: Sequence[tuple[str, str]], codes: frozenset[str]
) -> Observed:
    """The observed state a telegram shows (with the given set of codes)."""
    ids = {c: v for c, v in watched if _kind_of_code(c) == "meter"}
    firmware = {c: v for c, v in watched if _kind_of_code(c) == "firmware"}
    return Observed(telegram.header, ids, firmware, telegram.spec, tuple(sorted(codes)))


def _line_changes(old: Observed, new: Observed) -> list[Change]:
    """The `meter`, `firmware` and `spec` changes from `old` to `new`."""
    changes = []
    before_meter = {"header": old.header, **old.ids}
    after_meter = {"header": new.header, **new.ids}
    if before_meter != after_meter:
        b, a = _differing(before_meter, after_meter)
        changes.append(Change("meter", "meter identity changed: " + _fields_text(b, a), b, a))
    if old.firmware != new.firmware:
        b, a = _differing(dict(old.firmware), dict(new.firmware))
        changes.append(Change("firmware", "firmware version changed: " + _fields_text(b, a), b, a))
    if old.spec != new.spec:
        changes.append(
            Change("spec", f"detected spec changed: {old.spec} -> {new.spec}", old.spec, new.spec)
        )
    return changes


def _differing(before: dict[str, str], after: dict[str, str]) -> tuple[dict[str, Any], ...]:
    """Of two field maps, the fields that differ (a missing field as None)."""
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def _fields_text(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """`field: old -> new` for each changed field."""
    return "; ".join(f"{k}: {before[k]} -> {after[k]}" for k in before)


def _codes_text(appeared: Sequence[str], gone: Sequence[str]) -> str:
    """What changed in the set of OBIS codes."""
    parts = []
    if appeared:
        parts.append("appeared " + ", ".join(appeared))
    if gone:
        parts.append("gone " + ", ".join(gone))
    return "OBIS codes " + "; ".join(parts)


#: The variant settings whose change a technician's reload tells the testers of.
OPERATOR_FIELDS = ("model", "description", "port", "spec")


def operator_change(old: VariantConfig, new: VariantConfig) -> Change | None:
    """The `operator` notice a changed variant in variants.toml gives, or None. A new port is
    told without its path (the rig's host is not the testers' business)."""
    changed = [f for f in OPERATOR_FIELDS if getattr(old, f) != getattr(new, f)]
    if not changed:
        return None
    shown = [f for f in changed if f != "port"]
    before = {f: getattr(old, f) for f in shown}
    after = {f: getattr(new, f) for f in shown}
    parts = [_fields_text(before, after)] if shown else []
    if "port" in changed:
        parts.append("read from another port")
    return Change("operator", f"variant {new.id} changed: " + "; ".join(parts), before, after)
