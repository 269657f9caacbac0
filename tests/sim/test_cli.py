"""`p1-gateway simulate` as a process: ports, variants file, commands, clean stop."""

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.p1 import Frame, Framer
from gateway.sim.cli import execute, parse_rate, select_models
from tests.support.pty import PtyReader, wait_until


def _start(*args: str) -> subprocess.Popen[str]:
    """Start the simulator with `args`, stdin a pipe for commands."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _readline_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    """Read stdout lines until one starts with `prefix`; return them all."""
    assert proc.stdout is not None
    lines = []
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"simulator ended before {prefix!r}: {lines}")
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines


def test_simulate_serves_ports_writes_variants_and_obeys_commands(tmp_path: Path) -> None:
    """The CLI prints its ports, writes [[variant]] TOML, serves telegrams, unplugs on command
    and stops cleanly on SIGTERM, removing its links."""
    variants = tmp_path / "variants.toml"
    proc = _start(
        "--variant", "fluvius-t211", "--variant", "kaifa-dsmr42",
        "--link-dir", str(tmp_path), "--variants-out", str(variants),
        "--rate", "5", "--commands",
    )  # fmt: skip
    try:
        lines = _readline_until(proc, "ready:")
        assert any("fluvius-t211" in line and "/dev/pts/" in line for line in lines)
        entries = tomllib.loads(variants.read_text())["variant"]
        assert [(e["id"], e["spec"]) for e in entries] == [
            ("fluvius-t211", "BELGIUM_FLUVIUS"),
            ("kaifa-dsmr42", "V4"),
        ]
        link = tmp_path / "fluvius-t211"
        assert entries[0]["port"] == str(link)
        with PtyReader(link) as reader:
            wait_until(
                lambda: any(isinstance(f, Frame) and f.crc_ok for f in Framer().feed(reader.data)),
                message="a valid telegram from the CLI's pty",
            )
            old_pty = os.path.realpath(link)
            assert proc.stdin is not None
            proc.stdin.write("unplug fluvius-t211 0.5\n")
            proc.stdin.flush()
            assert _readline_until(proc, "ok")[-1].startswith("ok unplug fluvius-t211")
            wait_until(lambda: reader.eof, message="end of file on unplug")
        wait_until(lambda: link.exists(), message="the link re-pointed after replug")
        proc.stdin.write("bogus all\n")
        proc.stdin.flush()
        assert _readline_until(proc, "error")[-1].startswith("error")
        assert old_pty  # the new pty may or may not reuse the number; the link is what counts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulate_list_and_bad_arguments() -> None:
    """--list names every model; an unknown model is refused with exit code 2."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "--list"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "fluvius-t211" in out.stdout and "9600 7E1" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "--variant", "nope"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "nope" in bad.stderr


FAULT_UNITS = {
    "--bad-crc-every N": "telegram",
    "--truncate-every N": "telegram",
    "--noise-every N": "telegram",
    "--noise-bytes B": "bytes",
    "--silence-every S": "seconds",
    "--silence-for S": "seconds",
    "--unplug-every S": "seconds",
    "--unplug-for S": "seconds",
}


def test_fault_options_say_their_units() -> None:
    """`simulate --help` explains every recurring-fault option, naming what N, B or S counts."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = " ".join(out.stdout.split()).split("recurring faults", 1)[1]
    for option, unit in FAULT_UNITS.items():
        assert option in text, option
        explained = text.split(option, 1)[1].split(" --", 1)[0]
        assert unit in explained, (option, explained)


def test_model_selection_and_rates() -> None:
    """Models by id or the default rig, replicated by --count; rates parse or are refused."""
    assert [m.id for m in select_models(["smarty-lu"], None)] == ["smarty-lu"]
    assert len(select_models(None, 32)) == 32
    assert parse_rate("line") == "line" and parse_rate("2.5") == 2.5 and parse_rate(None) is None
    with pytest.raises(ValueError):
        parse_rate("0")


def test_commands_need_a_known_variant() -> None:
    """A command naming no or an unknown variant is an error, not a crash."""
    from gateway.sim import VirtualRig, catalogue

    rig = VirtualRig([catalogue()["smarty-lu"]])
    with pytest.raises(ValueError):
        execute(rig, ["unplug"])
    with pytest.raises(KeyError):
        execute(rig, ["unplug", "nope"])
    assert execute(rig, ["help"]).startswith("ok")
