"""The simulator's additions for the end-to-end benchmark: write-completion times, rate switch."""

from __future__ import annotations

from pathlib import Path

from gateway.p1 import Frame, Framer
from gateway.sim import VirtualRig, catalogue
from tests.support.pty import PtyReader, wait_until


def _frames(data: bytes) -> list[Frame]:
    """The whole frames in a byte stream."""
    return [f for f in Framer().feed(data) if isinstance(f, Frame)]


def test_on_written_reports_each_telegram_once_in_order_after_its_last_byte(
    tmp_path: Path,
) -> None:
    """Each telegram is reported once, in order, and only once its last byte is on the pty."""
    model = catalogue()["fluvius-t211"]
    reports: list[tuple[int, int, int]] = []
    with VirtualRig([model], link_dir=tmp_path, rate=20, start_paused=True) as rig:
        meter = rig.meter(model.id)

        def written(seq: int, at_ns: int) -> None:
            reports.append((seq, at_ns, meter.stats().bytes_written))

        meter.on_written = written
        with PtyReader(tmp_path / model.id) as reader:
            rig.resume()
            wait_until(lambda: len(reports) >= 8, message="8 telegrams reported written")
            rig.pause()
            assert rig.wait_drained(10)
            wait_until(lambda: len(_frames(reader.data)) >= len(reports), message="all read")
            frames = _frames(reader.data)
    seqs = [seq for seq, _, _ in reports]
    assert seqs == list(range(1, len(seqs) + 1))
    times = [at for _, at, _ in reports]
    assert times == sorted(times)
    # The stream holds only whole telegrams: telegram n ends at the sum of the first n sizes.
    assert [meter.sequence_of(f.raw) for f in frames[: len(seqs)]] == seqs
    end = 0
    for (_, _, written_so_far), frame in zip(reports, frames, strict=False):
        end += len(frame.raw)
        assert written_so_far >= end, "reported before its last byte was written"


def test_without_a_hook_nothing_is_kept_for_a_hook_set_later(tmp_path: Path) -> None:
    """Without a hook the meter keeps no end offsets: a hook set later hears only of telegrams
    queued after it was set, none of those written before."""
    model = catalogue()["iskra-am550-dsmr50"]
    reports: list[int] = []
    with VirtualRig([model], link_dir=tmp_path, rate=20) as rig:
        meter = rig.meter(model.id)
        with PtyReader(tmp_path / model.id) as reader:
            wait_until(lambda: len(_frames(reader.data)) >= 3, message="3 telegrams")
            assert meter.on_written is None
            rig.pause()
            assert rig.wait_drained(10)
            before = meter.stats().telegrams
            meter.on_written = lambda seq, _at: reports.append(seq)
            rig.resume()
            wait_until(lambda: len(reports) >= 2, message="2 telegrams reported written")
    assert reports[:2] == [before + 1, before + 2]


def test_set_rate_switches_between_rig_rate_and_flood(tmp_path: Path) -> None:
    """A running meter goes from one telegram a second to back to back and back again."""
    model = catalogue()["iskra-am550-dsmr50"]
    with VirtualRig([model], link_dir=tmp_path, rate=1.0) as rig:
        meter = rig.meter(model.id)
        with PtyReader(tmp_path / model.id):
            wait_until(lambda: meter.stats().telegrams >= 1, message="a first telegram")
            rig.set_rate("line", line_pacing=False)
            before = meter.stats().telegrams
            wait_until(
                lambda: meter.stats().telegrams >= before + 200, 20, message="a flood of 200"
            )
            rig.set_rate(0.5, line_pacing=True)
            assert rig.wait_drained(10)
            slow = meter.stats().telegrams
            # At 0.5 telegram/s at most a couple more come in the next second.
            wait_until(lambda: meter.stats().telegrams >= slow + 1, 10, message="paced again")
            assert meter.stats().telegrams <= slow + 3
