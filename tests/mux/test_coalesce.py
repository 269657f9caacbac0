"""Read coalescing: the pure predictor with a fake clock, and the reader on real ptys at line pace.

The pty tests write telegrams as a meter behind a serial adapter delivers them: 115 bytes every
10 ms (115200 baud). They check behaviour and deterministic-enough counts (reads per telegram
with coalescing on and off, side by side), never a speed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gateway.mux import (
    FrameDropped,
    FrameReceived,
    Multiplexer,
    PortConfig,
    PortLost,
    PortOpened,
)
from gateway.mux.coalesce import (
    MAX_PARKED_BYTES,
    MIN_SAMPLES,
    WINDOW,
    ReadCoalescer,
    byte_time_ns,
)
from gateway.p1.crc import crc_hex
from gateway.sim import VirtualRig, catalogue
from tests.mux.conftest import Recorder, assert_contiguous, sequences
from tests.support.pty import PtyPair, wait_until

MS = 1_000_000
BYTE_NS = byte_time_ns(115200, 8, "N", 1)  # 86 806 ns
GUARD = 3 * MS
CHUNK = 115
CHUNK_S = 0.01


def telegram(seq: int, lines: int) -> bytes:
    """A valid DSMR 5 style frame carrying `seq`, about 28 bytes per line."""
    body = b"/TST5\\2TEST-METER\r\n\r\n"
    body += f"0-0:96.1.1({seq:012d})\r\n".encode()
    body += b"".join(f"1-0:{i % 99}.8.1(012345.678*kWh)\r\n".encode() for i in range(lines))
    body += b"!"
    return body + crc_hex(body).encode() + b"\r\n"


def seq_of(raw: bytes) -> int:
    """The sequence number `telegram` put in a frame."""
    start = raw.index(b"0-0:96.1.1(") + len(b"0-0:96.1.1(")
    return int(raw[start : start + 12])


class PacedMeter:
    """Writes telegrams to a pty at line pace in a thread: CHUNK bytes every CHUNK_S."""

    def __init__(self, pty: PtyPair) -> None:
        self.pty = pty
        self.sent: list[int] = []
        self._lock = threading.Lock()

    def send(self, frames: list[bytes], gap_s: float = 0.15) -> None:
        """Write each frame at line pace, with a pause between frames."""
        for raw in frames:
            for i in range(0, len(raw), CHUNK):
                self.pty.write(raw[i : i + CHUNK])
                time.sleep(CHUNK_S)
            with self._lock:
                self.sent.append(seq_of(raw))
            time.sleep(gap_s)

    def start(self, frames: list[bytes], gap_s: float = 0.15) -> threading.Thread:
        """Send in a background thread."""
        thread = threading.Thread(target=self.send, args=(frames, gap_s), daemon=True)
        thread.start()
        return thread


# --- the predictor, with a fake clock ------------------------------------------------------


def _frame(c: ReadCoalescer, t0: int, size: int, first: int, *, end_lag: int = 0) -> int:
    """Feed one paced frame: a first read of `first` bytes at t0, the rest at its line time."""
    until = c.after_read(
        t0, first, began_partial=False, pending=first, frame_sizes=[], dropped=False, parked=False
    )
    end = t0 + (size - first) * BYTE_NS + end_lag
    c.after_read(
        end,
        size - first,
        began_partial=True,
        pending=0,
        frame_sizes=[size],
        dropped=False,
        parked=False,
    )
    return until


def _warmed(sizes: list[int], first: int, period_ms: int = 1_000) -> tuple[ReadCoalescer, int]:
    """A coalescer that has seen paced frames of `sizes`, and the time one period after them."""
    c = ReadCoalescer(guard_ns=GUARD, byte_ns=BYTE_NS)
    t = 0
    for size in sizes:
        _frame(c, t, size, first)
        t += period_ms * MS
    return c, t


def _start(c: ReadCoalescer, t: int, first: int) -> int:
    """The read that starts a new frame at t: until when the port parks (0: not parked)."""
    return c.after_read(
        t, first, began_partial=False, pending=first, frame_sizes=[], dropped=False, parked=False
    )


def test_no_parking_until_enough_frames_were_seen() -> None:
    """The first frames are read on readiness; then the first read of a frame parks the port
    until the frame's line time minus the guard."""
    c = ReadCoalescer(guard_ns=GUARD, byte_ns=BYTE_NS)
    t = 0
    for _ in range(MIN_SAMPLES):
        assert _frame(c, t, 1000, 200) == 0
        t += 1_000 * MS
    until = _start(c, t, 200)
    assert until == t + 800 * BYTE_NS - GUARD


def test_frames_within_one_read_turn_parking_off_for_a_window() -> None:
    """A whole frame in one read (a flood, a socket, a whole write): no parking for a while."""
    c, t = _warmed([1000] * MIN_SAMPLES, 200)
    c.after_read(
        t, 1000, began_partial=False, pending=0, frame_sizes=[1000], dropped=False, parked=False
    )
    assert c.prediction is None
    for _ in range(WINDOW):
        t += 1_000 * MS
        assert _frame(c, t, 1000, 200) == 0
    assert c.prediction is not None


def test_a_frame_found_complete_when_parked_moves_the_prediction_earlier() -> None:
    """A parked read that completes the frame may have come late: the next park ends sooner."""
    c, t = _warmed([1000] * MIN_SAMPLES, 200)
    first_until = _start(c, t, 200)
    c.after_read(
        first_until,
        800,
        began_partial=True,
        pending=0,
        frame_sizes=[1000],
        dropped=False,
        parked=True,
    )
    t += 1_000 * MS
    next_until = _start(c, t, 200)
    assert next_until - t < first_until - (t - 1_000 * MS)


def test_a_shorter_frame_is_learned_at_once_from_its_size() -> None:
    """Sizes are known exactly once a frame completes: the smallest recent one is predicted."""
    c, t = _warmed([1000, 1000, 600], 200)
    until = _start(c, t, 200)
    assert until == t + 400 * BYTE_NS - GUARD


def test_a_long_frame_is_read_at_least_every_max_parked_bytes() -> None:
    """A park never lets more than MAX_PARKED_BYTES gather (a tty buffers 4 KiB)."""
    c, t = _warmed([12_000] * MIN_SAMPLES, 100, period_ms=2_000)
    until = _start(c, t, 100)
    assert until == t + MAX_PARKED_BYTES * BYTE_NS


def test_a_frame_whose_start_was_not_seen_is_not_parked() -> None:
    """Bytes of a frame begun before the coalescer knew of it: read on readiness only."""
    c, t = _warmed([1000] * MIN_SAMPLES, 200)
    c.reset()
    assert (
        c.after_read(
            t, 100, began_partial=True, pending=300, frame_sizes=[], dropped=False, parked=False
        )
        == 0
    )


# --- the reader on real ptys -----------------------------------------------------------------


def _reads_per_telegram(coalesce: bool, tmp_path: Path) -> tuple[float, Recorder, VirtualRig]:
    """Run three 115200-baud meters at 5 telegrams/s; reads per telegram after a warm-up, and
    every frame checked against the simulator's sequence numbers."""
    ids = ["fluvius-t211", "iskra-am550-dsmr50", "landisgyr-e350-dsmr40"]
    models = [catalogue()[i] for i in ids]
    recorder = Recorder()
    with (
        VirtualRig(models, link_dir=tmp_path, rate=5, start_paused=True) as rig,
        Multiplexer(
            recorder,
            [PortConfig(v, p, spec=rig.meter(v).model.spec) for v, p in rig.ports().items()],
            coalesce=coalesce,
        ) as mux,
    ):
        recorder.wait(lambda: len(recorder.of(PortOpened)) == 3, message="ports open")
        rig.resume()
        recorder.wait(
            lambda: all(len(recorder.frames(v)) >= 6 for v in ids), timeout=30, message="warm-up"
        )
        before = {v: (s.counters.reads, s.counters.telegrams) for v, s in mux.snapshot().items()}
        recorder.wait(
            lambda: all(len(recorder.frames(v)) >= 26 for v in ids), timeout=60, message="20 more"
        )
        rig.pause()
        after = {v: (s.counters.reads, s.counters.telegrams) for v, s in mux.snapshot().items()}
        for v in ids:
            meter = rig.meter(v)
            wait_until(
                lambda m=meter, v=v: sequences(rig, recorder, v)[-1:] == [m.stats().telegrams],
                timeout=30,
                message=f"the last telegram of {v}",
            )
        for v in ids:
            assert_contiguous(sequences(rig, recorder, v), last=rig.meter(v).stats().telegrams)
    reads = sum(after[v][0] - before[v][0] for v in ids)
    telegrams = sum(after[v][1] - before[v][1] for v in ids)
    return reads / telegrams, recorder, rig


def test_coalescing_cuts_reads_per_telegram_and_loses_nothing(tmp_path: Path) -> None:
    """At line pace, every telegram arrives whole and in order either way, and coalescing
    reads each in about three reads instead of one per piece the line delivers (measured: 3.0
    to 3.5 against 5.0 to 7.8; the simulator shares this process's GIL, which blurs timing)."""
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on, recorder_on, _ = _reads_per_telegram(True, tmp_path / "on")
    off, recorder_off, _ = _reads_per_telegram(False, tmp_path / "off")
    for recorder in (recorder_on, recorder_off):
        assert recorder.of(FrameDropped) == []
        assert all(e.frame.crc_ok is not False for e in recorder.of(FrameReceived))
    assert off >= 4.5, f"uncoalesced reads per telegram {off:.2f}"
    assert on <= 4.0 and off - on >= 1.0, f"coalesced {on:.2f} reads per telegram, not {off:.2f}"


def test_frames_shorter_and_longer_than_predicted_all_arrive_in_order(recorder: Recorder) -> None:
    """After the port learned 1.1 kB frames, 0.4 kB and 2.2 kB ones come: every frame is
    delivered whole, in order, and the port was parked on the way."""
    long_, short, longer = 36, 10, 76
    plan = [long_] * 6 + [short] * 4 + [long_] * 3 + [longer] * 3 + [long_] * 3
    frames = [telegram(seq, lines) for seq, lines in enumerate(plan, start=1)]
    parked_seen: list[int] = []
    with (
        PtyPair() as pty,
        Multiplexer(recorder, [PortConfig("m1", pty.path, spec="V5")]) as mux,
    ):
        recorder.wait(lambda: recorder.of(PortOpened, "m1"), message="port opened")
        meter = PacedMeter(pty)
        thread = meter.start(frames)
        while thread.is_alive():
            until = mux.parked_until("m1")
            if until is not None:
                parked_seen.append(until)
            time.sleep(0.002)
        recorder.wait(lambda: len(recorder.frames("m1")) == len(frames), message="every frame")
        reads = mux.snapshot()["m1"].counters.reads
    got = [e.frame.raw for e in recorder.frames("m1")]
    assert got == frames
    assert all(e.frame.crc_ok for e in recorder.frames("m1"))
    assert recorder.of(FrameDropped) == []
    assert parked_seen, "the port was never parked"
    pieces = sum(-(-len(f) // CHUNK) for f in frames)
    assert reads < pieces, f"{reads} reads for {pieces} pieces written"


def test_unplug_while_parked_is_a_port_lost_and_other_ports_go_on(recorder: Recorder) -> None:
    """A port unplugged while parked mid-frame is lost (its partial frame truncated); the
    other port keeps delivering every frame."""
    frames = [telegram(seq, 36) for seq in range(1, 7)]
    other_frames = [telegram(seq, 36) for seq in range(101, 113)]
    with (
        PtyPair() as victim,
        PtyPair() as other,
        Multiplexer(
            recorder, [PortConfig("v", victim.path, spec="V5"), PortConfig("o", other.path)]
        ) as mux,
    ):
        recorder.wait(lambda: len(recorder.of(PortOpened)) == 2, message="ports open")
        other_thread = PacedMeter(other).start(other_frames)
        PacedMeter(victim).send(frames)
        recorder.wait(lambda: len(recorder.frames("v")) == len(frames), message="victim frames")
        victim.write(telegram(7, 36)[: 2 * CHUNK])
        wait_until(lambda: mux.parked_until("v") is not None, message="victim parked mid-frame")
        victim.close_master()
        recorder.wait(lambda: recorder.of(PortLost, "v"), message="victim lost")
        other_thread.join(30)
        recorder.wait(
            lambda: len(recorder.frames("o")) == len(other_frames), message="other port's frames"
        )
    assert [seq_of(e.frame.raw) for e in recorder.frames("v")] == list(range(1, 7))
    (dropped,) = recorder.of(FrameDropped, "v")
    assert dropped.reason == "truncated" and dropped.size == 2 * CHUNK
    assert [seq_of(e.frame.raw) for e in recorder.frames("o")] == list(range(101, 113))
