"""The shell around the meter watch (`observe`): notices stored, posted and tidied.

A change a meter shows is seen on the reader thread (cheaply, by the pure watch) and handed to
the main thread (`drain`), so the reader never waits for the disk. There, as for a
technician's change to a variant (reload), the new observed state and its notices are
committed to the spool's `observed` and `notice` tables in one transaction, then handed to the
publisher, which sends each retained (with its 180-day expiry) until the broker acknowledges
it; the main loop then deletes the acknowledged ones (`tidy`). At start the stored observed
state is the baseline (a restart posts nothing new) and the notices not yet acknowledged go
out again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from gateway.config import GatewayConfig
from gateway.daemon.observe import Change, MeterWatch, Observed, operator_change
from gateway.errors import GatewayError
from gateway.notices import notice_id, notice_payload, random_token
from gateway.p1.telegram import Telegram
from gateway.publish import Publisher
from gateway.publish.notices import NoticeStore
from gateway.publish.payload import encode_json_bytes

log = structlog.get_logger("p1-gateway")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MeterNotices:
    """Each variant's watch, the store behind it and the notices it posts."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.rig = publisher.settings.rig
        self.store = NoticeStore(publisher.settings.spool.path)
        self._watches: dict[str, MeterWatch] = {}
        self._observed: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # the catalogue's observed blocks, read by both threads
        self._seen: deque[tuple[str, Observed, list[Change], int]] = deque()
        """Changes the reader thread saw, for the main thread to store and post (`drain`)."""
        self.posted = 0
        """Notices posted by this run."""

    def open(self) -> None:
        """Read the stored observed states (the baseline) and send the unacknowledged notices
        again; the publisher's spool must be open (SpoolError)."""
        self.store.open()
        for variant, text in self.store.observed().items():
            try:
                observed = Observed.from_json(json.loads(text))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("stored observed state unreadable", variant=variant, error=str(exc))
                continue
            self._watches[variant] = MeterWatch(observed)
            self._observed[variant] = observed.as_json()
        for topic, data in self.store.pending():
            self.publisher.post_notice(topic, data)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def catalogue(self, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The variant catalogue with each variant's `observed` block, where one is known."""
        with self._lock:
            return [
                {**e, "observed": self._observed[e["id"]]} if e["id"] in self._observed else {**e}
                for e in entries
            ]

    def telegram(self, variant: str, telegram: Telegram, mono_ns: int, wall_ns: int) -> bool:
        """Watch one decoded telegram (reader thread, hot path: cheap unless something
        changed); True when the meter showed a change: `drain` it on the main thread."""
        watch = self._watches.get(variant)
        if watch is None:
            watch = self._watches[variant] = MeterWatch()
        result = watch.feed(telegram, mono_ns)
        if result is None:
            return False
        observed, changes = result
        self._seen.append((variant, observed, changes, wall_ns))  # deque: thread-safe
        return True

    def drain(self) -> bool:
        """Store and post the changes the reader thread saw (main thread); True when there
        were any (the catalogue, with its observed blocks, is to go out again)."""
        if not self._seen:
            return False
        while self._seen:
            self._record(*self._seen.popleft())
        return True

    def reloaded(self, old: GatewayConfig, new: GatewayConfig) -> None:
        """Post an `operator` notice for each variant a technician changed (main thread)."""
        before = {v.id: v for v in old.variants}
        now = time.time_ns()
        for variant in new.variants:
            if variant.id in before:
                change = operator_change(before[variant.id], variant)
                if change is not None:
                    self._record(variant.id, None, [change], now)

    def tidy(self) -> None:
        """Delete the notices the broker acknowledged from the store (main thread)."""
        acked = self.publisher.take_acked_notices()
        if acked:
            try:
                self.store.delete(acked)
            except GatewayError as exc:  # they go out again at the next start: harmless
                log.warning("acknowledged notices not deleted", error=str(exc))

    def _record(
        self, variant: str, observed: Observed | None, changes: list[Change], wall_ns: int
    ) -> None:
        """Store the new state with its notices in one transaction, then post them."""
        at = _EPOCH + timedelta(microseconds=wall_ns // 1000)
        notices = []
        for change in changes:
            ident = notice_id(at, self.rig, random_token())
            body = notice_payload(
                ident,
                at,
                self.rig,
                change.kind,
                change.text,
                variant=variant,
                before=change.before,
                after=change.after,
            )
            notices.append((self.publisher.topics.notice(ident), encode_json_bytes(body), wall_ns))
        state = {} if observed is None else {variant: json.dumps(observed.as_json())}
        with self._lock:
            if observed is not None:
                self._observed[variant] = observed.as_json()
            try:
                self.store.record(state, notices)
            except GatewayError as exc:  # still posted: only a restart before the ack loses it
                log.error("notice not stored", variant=variant, error=str(exc))
            for topic, data, _ in notices:
                self.publisher.post_notice(topic, data)
        self.posted += len(notices)
        for change in changes:
            log.info("notice", variant=variant, kind=change.kind, text=change.text)
