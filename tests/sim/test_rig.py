"""The virtual rig on real pseudo-terminals: what a reader of its ports actually gets."""

import itertools
import os
import re
import time
from pathlib import Path

import pytest

from gateway.p1 import DroppedFrame, DropReason, Frame, Framer
from gateway.sim import EVEN_PARITY, NoiseKind, VirtualRig, catalogue, models_for
from tests.support.pty import PtyReader, wait_until


def _frames(data: bytes, strip_parity: bool = False) -> list[Frame]:
    """The whole frames in a byte stream."""
    return [f for f in Framer(strip_parity=strip_parity).feed(data) if isinstance(f, Frame)]


def _models(*ids: str) -> list:
    """Catalogue models by id."""
    known = catalogue()
    return [known[i] for i in ids]


def test_a_reader_of_the_port_gets_valid_advancing_telegrams(tmp_path: Path) -> None:
    """Telegrams arrive whole with valid CRCs, meter times one interval apart, in order."""
    with VirtualRig(_models("fluvius-t211"), link_dir=tmp_path, rate=5) as rig:
        meter = rig.meter("fluvius-t211")
        assert os.path.realpath(tmp_path / "fluvius-t211") == meter.pty
        with PtyReader(tmp_path / "fluvius-t211") as reader:
            wait_until(lambda: len(_frames(reader.data)) >= 5, message="5 telegrams")
            frames = _frames(reader.data)
    assert all(f.crc_ok for f in frames)
    times = [re.search(rb"0-0:1\.0\.0\((\d{12})", f.raw).group(1) for f in frames]  # type: ignore[union-attr]
    assert times == sorted(times) and len(set(times)) == len(times)
    seqs = [meter.sequence_of(f.raw) for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_real_interval_is_kept_on_the_wall_clock(tmp_path: Path) -> None:
    """Without a rate, a 1-second meter sends about one telegram a second."""
    with (
        VirtualRig(_models("iskra-am550-dsmr50"), link_dir=tmp_path) as rig,
        PtyReader(tmp_path / "iskra-am550-dsmr50") as reader,
    ):
        start = time.monotonic()
        wait_until(lambda: len(_frames(reader.data)) >= 3, timeout=10, message="3 telegrams")
        elapsed = time.monotonic() - start
    assert rig.meter("iskra-am550-dsmr50").stats().telegrams >= 3
    assert elapsed >= 1.5  # three telegrams need at least two intervals


def test_dsmr22_lines_carry_even_parity_in_bit_7(tmp_path: Path) -> None:
    """A 7E1 meter's bytes have even parity; an 8N1 reader must strip it to frame them."""
    with (
        VirtualRig(_models("iskra-mt382-dsmr22"), link_dir=tmp_path, rate=5) as rig,
        PtyReader(tmp_path / "iskra-mt382-dsmr22") as reader,
    ):
        wait_until(lambda: len(_frames(reader.data, strip_parity=True)) >= 2, message="2 telegrams")
        data = reader.data
    assert rig.meter("iskra-mt382-dsmr22").model.line == "9600 7E1"
    assert all(bin(b).count("1") % 2 == 0 for b in data)
    assert any(b & 0x80 for b in data)
    assert _frames(data) == []  # unstripped: '/' (0x2F) arrives as 0xAF
    frames = _frames(data, strip_parity=True)
    assert all(f.crc_ok is None for f in frames)
    assert frames[0].raw.translate(EVEN_PARITY) in data


def test_line_pacing_holds_the_byte_rate_of_a_9600_baud_line(tmp_path: Path) -> None:
    """At line rate a 9600-baud meter delivers about 960 bytes a second, no more."""
    with (
        VirtualRig(_models("kamstrup-162-dsmr22"), link_dir=tmp_path, rate="line") as rig,
        PtyReader(tmp_path / "kamstrup-162-dsmr22") as reader,
    ):
        wait_until(lambda: len(reader.data) > 0, message="first bytes")
        start, first = time.monotonic(), len(reader.data)
        time.sleep(1.5)
        rate = (len(reader.data) - first) / (time.monotonic() - start)
    assert rig.meter("kamstrup-162-dsmr22").model.line_bytes_per_s == 960
    assert 0 < rate < 1100  # never faster than the line (plus a 50 ms burst allowance)


def test_a_telegram_starts_at_the_line_pace_after_an_idle_line(tmp_path: Path) -> None:
    """The gap between telegrams earns no burst: each telegram takes its line time, less at
    most one 10 ms write."""
    variant = "fluvius-s211"
    with (
        VirtualRig(_models(variant), link_dir=tmp_path, rate=2) as rig,
        PtyReader(tmp_path / variant) as reader,
    ):
        wait_until(lambda: len(_frames(reader.data)) >= 4, timeout=15)
        data, arrivals = reader.data, list(reader.arrivals)
    rate = rig.meter(variant).model.line_bytes_per_s
    starts = [m.start() for m in re.finditer(re.escape(b"/"), data)][1:4]  # after a gap each
    for start in starts:
        size = data.index(b"\r\n", data.index(b"!", start)) + 2 - start
        began = next(t for t, upto in arrivals if upto > start)
        ended = next(t for t, upto in arrivals if upto >= start + size)
        # Before: the first write after the gap carried up to 50 ms of line time at once.
        assert ended - began >= size / rate - 0.025, (ended - began, size / rate)


def test_unplug_closes_the_pty_and_replug_repoints_the_link(tmp_path: Path) -> None:
    """Unplug: the link goes and the reader sees end of file; replug: a new pty, link back."""
    with VirtualRig(_models("fluvius-s211"), link_dir=tmp_path, rate=10) as rig:
        meter = rig.meter("fluvius-s211")
        link = tmp_path / "fluvius-s211"
        reader = PtyReader(link)
        wait_until(lambda: _frames(reader.data), message="a telegram before unplugging")
        meter.unplug(0.5)
        wait_until(lambda: reader.eof, message="end of file after unplug")
        reader.close()
        assert not meter.stats().plugged
        assert not link.exists()
        wait_until(lambda: meter.stats().plugged, message="replug")
        assert os.path.realpath(link) == meter.pty
        with PtyReader(link) as again:
            wait_until(lambda: _frames(again.data), message="telegrams after replug")
        assert meter.stats().unplugs == 1


def test_unplug_without_a_delay_waits_for_replug(tmp_path: Path) -> None:
    """unplug(None) keeps the meter away until replug()."""
    with VirtualRig(_models("fluvius-s211"), link_dir=tmp_path, rate=10) as rig:
        meter = rig.meter("fluvius-s211")
        meter.unplug(None)
        wait_until(lambda: not meter.stats().plugged, message="unplugged")
        time.sleep(0.3)
        assert not meter.stats().plugged
        meter.replug()
        wait_until(lambda: meter.stats().plugged, message="replugged")


def test_faults_bad_crc_truncation_and_noise_reach_the_reader(tmp_path: Path) -> None:
    """Each fault shows as the framer counts it: bad CRCs, a truncation, noise, oversize."""
    rig = VirtualRig(_models("fluvius-t211"), link_dir=tmp_path, rate=10, line_pacing=False)
    framer = Framer()
    events: list = []
    with rig, PtyReader(tmp_path / "fluvius-t211") as reader:
        meter = rig.meter("fluvius-t211")

        def seen() -> list:
            """Frame what arrived since the last look."""
            data = reader.data
            events.extend(framer.feed(data[framer.counters.bytes_in :]))
            return events

        wait_until(lambda: any(isinstance(e, Frame) for e in seen()), message="first telegram")
        meter.corrupt_crc(2)
        meter.truncate(1)
        wait_until(
            lambda: sum(1 for e in seen() if isinstance(e, Frame) and e.crc_ok is False) == 2,
            message="two bad CRCs",
        )
        assert any(isinstance(e, DroppedFrame) and e.reason is DropReason.TRUNCATED for e in events)
        noise_before = framer.counters.noise_bytes
        meter.inject_noise(3000, NoiseKind.GARBAGE)
        wait_until(
            lambda: seen() and framer.counters.noise_bytes >= noise_before + 3000,
            message="3000 noise bytes",
        )
        meter.inject_noise(40000, NoiseKind.UNTERMINATED)
        wait_until(
            lambda: any(
                isinstance(e, DroppedFrame) and e.reason is DropReason.OVERSIZE for e in seen()
            ),
            message="an oversize frame",
        )
        count = sum(1 for e in seen() if isinstance(e, Frame))
        wait_until(
            lambda: sum(1 for e in seen() if isinstance(e, Frame)) > count + 2,
            message="telegrams after the noise",
        )
    assert meter.stats().noise_written == 43000


def test_a_paced_unterminated_burst_is_one_run_after_one_slash(tmp_path: Path) -> None:
    """At line pace noise goes out in pieces; an unterminated burst still holds one '/' and
    no '!': one frame that outgrows the framer's bound, whole up to the next telegram."""
    with VirtualRig(_models("fluvius-t211"), link_dir=tmp_path, start_paused=True) as rig:
        meter = rig.meter("fluvius-t211")
        with PtyReader(tmp_path / "fluvius-t211") as reader:
            meter.inject_noise(5000, NoiseKind.UNTERMINATED)
            wait_until(lambda: len(reader.data) >= 5000, message="the burst")
            burst = reader.data
    assert meter.stats().telegrams == 0
    assert len(burst) == 5000 and burst[0:1] == b"/"
    assert burst.count(b"/") == 1 and b"!" not in burst


def test_silence_stops_telegrams_for_a_while(tmp_path: Path) -> None:
    """silence(s): no telegram for s seconds, then they come again."""
    with VirtualRig(_models("fluvius-t211"), link_dir=tmp_path, rate=8) as rig:
        meter = rig.meter("fluvius-t211")
        with PtyReader(tmp_path / "fluvius-t211") as reader:
            wait_until(lambda: _frames(reader.data), message="first telegram")
            meter.silence(1.0)
            time.sleep(0.3)  # let what was queued drain
            during = meter.stats().telegrams
            time.sleep(0.5)
            assert meter.stats().telegrams == during
            wait_until(lambda: meter.stats().telegrams > during + 3, message="telegrams again")


def test_nobody_reading_never_blocks_the_rig_and_drops_are_counted(tmp_path: Path) -> None:
    """With no reader and a full pty buffer the rig drops whole telegrams, counts them, and
    stays responsive."""
    rig = VirtualRig(_models("fluvius-t211"), link_dir=tmp_path, rate=200, line_pacing=False)
    rig.start()
    try:
        meter = rig.meter("fluvius-t211")
        wait_until(lambda: meter.stats().dropped > 20, timeout=15, message="drops")
        assert rig.error is None
        assert meter.stats().backlog <= meter.backlog_limit + 4096
    finally:
        thread = rig._thread
        rig.stop()
    assert thread is not None and not thread.is_alive(), "the rig thread did not stop"


def test_flood_rate_runs_the_meter_clock_one_interval_per_telegram(tmp_path: Path) -> None:
    """At a flood rate meter times still step by the meter's interval, one per telegram."""
    with (
        VirtualRig(_models("kaifa-dsmr42"), link_dir=tmp_path, rate=50) as rig,
        PtyReader(tmp_path / "kaifa-dsmr42") as reader,
    ):
        wait_until(lambda: len(_frames(reader.data)) >= 10, message="10 telegrams")
        frames = _frames(reader.data)
    meter = rig.meter("kaifa-dsmr42")
    seqs = [meter.sequence_of(f.raw) for f in frames]
    times = [re.search(rb"0-0:1\.0\.0\((\d{12})", f.raw).group(1) for f in frames]  # type: ignore[union-attr]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    seconds = [int(t[-2:]) + 60 * int(t[-4:-2]) for t in times]
    assert all((b - a) % 3600 == 10 for a, b in itertools.pairwise(seconds))


def test_many_meters_get_distinct_contract_ids() -> None:
    """models_for(32) cycles the catalogue with distinct, contract-safe ids."""
    models = models_for(32)
    ids = [m.id for m in models]
    assert len(set(ids)) == 32
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", i) for i in ids)


def test_duplicate_or_unsafe_ids_are_refused() -> None:
    """A rig cannot have two meters with one id, nor an id unfit for a topic."""
    fluvius = catalogue()["fluvius-t211"]
    with pytest.raises(ValueError):
        VirtualRig([fluvius, fluvius])
    import dataclasses

    with pytest.raises(ValueError):
        VirtualRig([dataclasses.replace(fluvius, id="Bad/Id")])


def test_variants_toml_is_what_the_gateway_config_reads(tmp_path: Path) -> None:
    """variants_toml() gives [[variant]] entries: id, port (the link), spec, model."""
    import tomllib

    with VirtualRig(link_dir=tmp_path, rate=1) as rig:
        data = tomllib.loads(rig.variants_toml())
    entries = data["variant"]
    assert [e["id"] for e in entries] == list(rig.meters)
    for e in entries:
        assert e["port"] == str(tmp_path / e["id"])
        assert e["spec"] == rig.meter(e["id"]).model.spec
