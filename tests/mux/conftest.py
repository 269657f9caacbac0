"""Shared pieces for the multiplexer's tests: an event recorder that is the mux's consumer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from gateway.mux import FrameReceived, MuxEvent
from gateway.sim import VirtualRig
from tests.support.pty import wait_until

E = TypeVar("E")


class Recorder:
    """A thread-safe consumer that keeps every event, with look-ups for assertions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[MuxEvent] = []

    def __call__(self, event: MuxEvent) -> None:
        """Keep one event (called in the mux's reader thread)."""
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[E], variant: str | None = None) -> list[E]:
        """Events of one type (and variant)."""
        with self._lock:
            return [
                e
                for e in self.events
                if isinstance(e, kind)
                and (variant is None or getattr(e, "variant", None) == variant)
            ]

    def frames(self, variant: str) -> list[FrameReceived]:
        """The frames received on one variant's port."""
        return self.of(FrameReceived, variant)

    def wait(
        self, predicate: Callable[[], object], timeout: float = 15.0, message: str = ""
    ) -> None:
        """Wait until `predicate` holds."""
        wait_until(predicate, timeout=timeout, message=message or "recorded events")


def sequences(rig: VirtualRig, recorder: Recorder, variant: str) -> list[int | None]:
    """The simulator's sequence number of every frame received on a variant's port."""
    meter = rig.meter(variant)
    return [meter.sequence_of(e.frame.raw) for e in recorder.frames(variant)]


def assert_contiguous(seqs: list[int | None], last: int | None = None) -> None:
    """Sequence numbers known, strictly consecutive, and (optionally) ending at `last`."""
    assert seqs, "no telegrams"
    assert None not in seqs, "a frame the simulator did not send"
    ints = [s for s in seqs if s is not None]
    assert ints == list(range(ints[0], ints[0] + len(ints))), f"gap or reorder in {ints}"
    if last is not None:
        assert ints[-1] == last


@pytest.fixture
def recorder() -> Recorder:
    """A fresh event recorder."""
    return Recorder()
