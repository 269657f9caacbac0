"""A line that goes quiet inside a frame, on real pseudo-terminals: the frame is cut short."""

from __future__ import annotations

import time

from gateway import corpus
from gateway.mux import FrameDropped, FrameEnd, Multiplexer, PortConfig, PortOpened
from gateway.mux.coalesce import MIN_SAMPLES
from gateway.sim import EVEN_PARITY
from tests.mux.conftest import Recorder
from tests.support.pty import PtyPair

S = 1_000_000_000

V5 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V5_TWO_MBUS").read()
V22 = corpus.entry("ndokter_dsmr_parser__TELEGRAM_V2_2").read()


def test_a_frame_whose_line_goes_quiet_is_cut_short_and_received_at_its_last_read(
    recorder: Recorder,
) -> None:
    """Half a telegram, then nothing for longer than truncate_after_s: a truncated drop with
    its bytes, timed by the read of its last byte, not by the cut; the next telegram frames."""
    with PtyPair() as pty:
        config = PortConfig("m1", pty.path, spec="V5", truncate_after_s=0.2)
        with Multiplexer(recorder, [config]):
            recorder.wait(lambda: recorder.of(PortOpened, "m1"), message="port opened")
            before = time.monotonic_ns()
            pty.write(V5[:300])
            recorder.wait(lambda: recorder.of(FrameDropped, "m1"), message="the cut frame")
            cut_seen = time.monotonic_ns()
            pty.write(V5)
            recorder.wait(lambda: recorder.frames("m1"), message="the next telegram")
    (dropped,) = recorder.of(FrameDropped, "m1")
    assert (dropped.reason, dropped.ended_by) == ("truncated", FrameEnd.QUIET_LINE)
    assert (dropped.raw, dropped.size) == (V5[:300], 300)
    assert before <= dropped.received_monotonic_ns
    assert cut_seen - dropped.received_monotonic_ns >= 0.2 * S
    assert recorder.frames("m1")[0].frame.raw == V5


def test_a_slow_line_parked_past_its_quiet_deadline_is_read_not_cut(recorder: Recorder) -> None:
    """At 9600 baud a parked port waits longer than a short truncate_after_s: the deadline
    reads the parked port first, finds the frame's bytes flowing, and cuts nothing."""
    wire = V22.translate(EVEN_PARITY)
    frames = MIN_SAMPLES + 2
    parked = 0
    with PtyPair() as pty:
        config = PortConfig("old", pty.path, spec="V2_2", truncate_after_s=0.15)
        with Multiplexer(recorder, [config]) as mux:
            recorder.wait(lambda: recorder.of(PortOpened, "old"), message="port opened")
            for _ in range(frames):
                for i in range(0, len(wire), 10):  # 10 bytes every 10 ms: 9600 baud's pace
                    pty.write(wire[i : i + 10])
                    time.sleep(0.01)
                    parked += mux.parked_until("old") is not None
                time.sleep(0.1)
            recorder.wait(lambda: len(recorder.frames("old")) == frames, message="every frame")
    assert parked, "the port was never parked"
    assert recorder.of(FrameDropped) == []
    assert all(e.frame.raw == V22 for e in recorder.frames("old"))
