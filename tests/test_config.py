"""The configuration loader: whole-or-nothing validation, file and field in every problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import diff_variants, load_config, load_status_config
from gateway.errors import ConfigError

MAIN = """
[rig]
id = "rig-a"

[mqtt]
host = "127.0.0.1"
port = 18830

[spool]
dir = "spool"

variants_file = "variants.toml"
slots_file = "slots.toml"
"""

VARIANTS = """
[[variant]]
id = "fluvius-t211"
port = "/dev/ttyUSB0"
spec = "BELGIUM_FLUVIUS"

[[variant]]
id = "iskra-dsmr22"
port = "/dev/ttyUSB1"
spec = "V2_2"
"""

SLOTS = """
[[slot]]
holder = "acme"
start = 2026-11-28T08:00:00+01:00
end   = 2026-11-29T06:00:00+01:00

[[slot]]
holder = "beta_lab"
start = 2026-11-29T06:00:00+01:00
end   = 2026-11-30T04:00:00+01:00
"""


def write_config(
    tmp_path: Path, main: str = MAIN, variants: str = VARIANTS, slots: str = SLOTS
) -> Path:
    """Write a main file with its variants and slots files; return the main file's path."""
    (tmp_path / "variants.toml").write_text(textwrap.dedent(variants))
    (tmp_path / "slots.toml").write_text(textwrap.dedent(slots))
    path = tmp_path / "gateway.toml"
    path.write_text(textwrap.dedent(main))
    return path


def problems_of(path: Path) -> list[str]:
    """The problems load_config reports for a config, as strings."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_valid_config_loads_with_files_resolved(tmp_path: Path) -> None:
    """A valid config loads whole; relative paths resolve against the main file's folder."""
    cfg = load_config(write_config(tmp_path))
    assert cfg.rig.id == "rig-a"
    assert [v.id for v in cfg.variants] == ["fluvius-t211", "iskra-dsmr22"]
    assert [s.holder for s in cfg.slots] == ["acme", "beta_lab"]
    assert cfg.spool.dir == tmp_path / "spool"
    assert cfg.variants_file == tmp_path / "variants.toml"
    assert set(cfg.watched_files) == {
        tmp_path / n for n in ("gateway.toml", "variants.toml", "slots.toml")
    }


def test_shipped_example_config_is_valid_but_for_its_password_file() -> None:
    """config/p1-gateway.toml is valid apart from the password file that lives on a rig."""
    path = Path(__file__).resolve().parents[1] / "config" / "p1-gateway.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.field for p in info.value.problems] == ["mqtt.password_file"]


def test_inline_variants_and_slots(tmp_path: Path) -> None:
    """Variants and slots may stand inline in the main file."""
    path = tmp_path / "g.toml"
    path.write_text(
        MAIN.replace('variants_file = "variants.toml"', "").replace('slots_file = "slots.toml"', "")
        + VARIANTS
        + SLOTS
    )
    cfg = load_config(path)
    assert len(cfg.variants) == 2 and len(cfg.slots) == 2


@pytest.mark.parametrize(
    "bad", ["rig\x00a", "rig+a", "rig#a", "rig/a", "$rig", "Rig-A", "", "-rig"]
)
def test_bad_rig_id_is_rejected(tmp_path: Path, bad: str) -> None:
    """A rig id that could break a topic is rejected at load time, naming the field."""
    escaped = bad.replace("\x00", "\\u0000")
    probs = problems_of(write_config(tmp_path, MAIN.replace('id = "rig-a"', f'id = "{escaped}"')))
    assert any("gateway.toml: rig.id:" in p for p in probs), probs


@pytest.mark.parametrize("bad", ["acme\\u0000", "ac+me", "ac#me", "ac/me", "$acme", ""])
def test_bad_holder_is_rejected_naming_the_slots_file(tmp_path: Path, bad: str) -> None:
    """A holder that could break a topic is rejected, naming the slots file and the slot."""
    probs = problems_of(write_config(tmp_path, slots=SLOTS.replace('"beta_lab"', f'"{bad}"')))
    assert any("slots.toml: slot[1].holder:" in p for p in probs), probs


@pytest.mark.parametrize("bad", ["flu\\u0000", "flu+", "flu#", "a/b", "$sys"])
def test_bad_variant_id_is_rejected(tmp_path: Path, bad: str) -> None:
    """A variant id that could break a topic is rejected, naming the variants file."""
    probs = problems_of(
        write_config(tmp_path, variants=VARIANTS.replace('"iskra-dsmr22"', f'"{bad}"'))
    )
    assert any("variants.toml: variant[1].id:" in p for p in probs), probs


def test_reserved_ids_are_refused_with_the_reason(tmp_path: Path) -> None:
    """Variant ids `schedule` and `session` (a holder's own topics) and the rig id `lab` (the
    lab's topics) are refused, each named with why."""
    variants = VARIANTS.replace('"fluvius-t211"', '"schedule"').replace(
        '"iskra-dsmr22"', '"session"'
    )
    path = write_config(tmp_path, MAIN.replace('id = "rig-a"', 'id = "lab"'), variants=variants)
    probs = problems_of(path)
    assert any("gateway.toml: rig.id:" in p and "'lab' is reserved" in p for p in probs), probs
    for i, name in enumerate(["schedule", "session"]):
        assert any(
            f"variants.toml: variant[{i}].id:" in p
            and f"'{name}' is reserved: p1/R/slot/H/{name} is a holder's own topic" in p
            for p in probs
        ), probs


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Problems in all three files are reported together, each with file and field."""
    path = write_config(
        tmp_path,
        MAIN.replace("port = 18830", "port = 99999"),
        VARIANTS.replace('spec = "V2_2"', 'spec = "V9"'),
        SLOTS.replace("end   = 2026-11-29T06:00:00+01:00", "end   = 2026-11-28T07:00:00+01:00"),
    )
    probs = problems_of(path)
    assert any("gateway.toml: mqtt.port:" in p for p in probs)
    assert any("variants.toml: variant[1].spec: unknown spec 'V9'" in p for p in probs)
    assert any("slots.toml: slot[0]:" in p and "not before end" in p for p in probs)


def test_overlapping_slots_are_rejected(tmp_path: Path) -> None:
    """Two slots that overlap are refused."""
    slots = SLOTS.replace("start = 2026-11-29T06:00:00+01:00", "start = 2026-11-29T05:00:00+01:00")
    assert any("overlaps" in p for p in problems_of(write_config(tmp_path, slots=slots)))


def test_slot_times_need_an_offset(tmp_path: Path) -> None:
    """A slot time without an offset is refused: it would depend on the machine's zone."""
    slots = SLOTS.replace("2026-11-28T08:00:00+01:00", "2026-11-28T08:00:00")
    assert any(
        "slot[0].start" in p and "offset" in p
        for p in problems_of(write_config(tmp_path, slots=slots))
    )


def test_duplicate_variant_ids_and_ports_are_rejected(tmp_path: Path) -> None:
    """Two variants with one id, or reading one port, are refused."""
    variants = VARIANTS.replace('"iskra-dsmr22"', '"fluvius-t211"').replace("ttyUSB1", "ttyUSB0")
    probs = problems_of(write_config(tmp_path, variants=variants))
    assert any("variant[1].id" in p and "already used" in p for p in probs)
    assert any("variant[1].port" in p and "already read" in p for p in probs)


def test_unknown_keys_and_syntax_errors_are_named(tmp_path: Path) -> None:
    """A misspelt key and a TOML syntax error are both reported with their file."""
    probs = problems_of(write_config(tmp_path, MAIN.replace("[mqtt]", "[mqtt]\nhots = 1")))
    assert any("mqtt.hots: unknown setting" in p for p in probs)
    probs = problems_of(write_config(tmp_path, variants="[[variant]\nid ="))
    assert any("variants.toml: (syntax)" in p for p in probs)


def test_missing_included_file_is_a_problem(tmp_path: Path) -> None:
    """A variants file that does not exist is reported, naming it."""
    path = write_config(tmp_path)
    (tmp_path / "variants.toml").unlink()
    assert any("variants.toml: (file): no such file" in p for p in problems_of(path))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """P1GW_ variables override the main file's settings, nested with '__'."""
    monkeypatch.setenv("P1GW_MQTT__HOST", "broker.example")
    monkeypatch.setenv("P1GW_CLOCK__REQUIRE_SYNC", "false")
    monkeypatch.setenv("P1GW_MQTT__QOS", "0")
    cfg = load_config(write_config(tmp_path))
    assert cfg.mqtt.host == "broker.example"
    assert cfg.mqtt.port == 18830
    assert cfg.clock.require_sync is False
    assert cfg.mqtt.qos == 0


def test_bad_environment_override_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid override is refused and the environment is named."""
    monkeypatch.setenv("P1GW_MQTT__QOS", "7")
    probs = problems_of(write_config(tmp_path))
    assert any("mqtt.qos" in p for p in probs)
    assert any(p.startswith("environment: P1GW_MQTT__QOS") for p in probs)


def test_unparsable_environment_section_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole section given as broken JSON is refused as a config problem, not a crash."""
    monkeypatch.setenv("P1GW_MQTT", "{not json")
    probs = problems_of(write_config(tmp_path))
    assert any(p.startswith("environment: P1GW_MQTT") for p in probs), probs


def test_password_file_first_line(tmp_path: Path) -> None:
    """The MQTT password is the password file's first line."""
    (tmp_path / "pass").write_text("s3cret\nignored\n")
    cfg = load_config(
        write_config(tmp_path, MAIN.replace("port = 18830", 'port = 18830\npassword_file = "pass"'))
    )
    assert cfg.mqtt_password() == "s3cret"


def test_status_file_defaults_beside_the_config_outside_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without RUNTIME_DIRECTORY and without `[status] file`, NAME.toml's status goes to
    NAME.status.json beside it: never to the service's /run/p1-gateway/status.json."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert load_config(write_config(tmp_path)).status.file == tmp_path / "gateway.status.json"


def test_status_file_defaults_to_systemds_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd the default is status.json in the first of RUNTIME_DIRECTORY's paths."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{tmp_path}/rt:{tmp_path}/other")
    assert load_config(write_config(tmp_path)).status.file == tmp_path / "rt" / "status.json"


@pytest.mark.parametrize("runtime", [None, "/run/p1-gateway"])
def test_a_configured_status_file_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str | None
) -> None:
    """`[status] file` wins over both defaults; a relative one is relative to the config."""
    if runtime is None:
        monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    else:
        monkeypatch.setenv("RUNTIME_DIRECTORY", runtime)
    relative = write_config(tmp_path, MAIN + '\n[status]\nfile = "run/s.json"\n')
    assert load_config(relative).status.file == tmp_path / "run" / "s.json"
    absolute = write_config(tmp_path, MAIN + f'\n[status]\nfile = "{tmp_path}/abs.json"\n')
    assert load_config(absolute).status.file == tmp_path / "abs.json"


@pytest.mark.parametrize(
    ("table", "env"),
    [
        ("", {}),
        ("", {"RUNTIME_DIRECTORY": "/run/x"}),
        ('[status]\nfile = "run/s.json"\ninterval = 2.5\n', {}),
        ("[status]\ninterval = 0.5\n", {"P1GW_STATUS__FILE": "/tmp/env.json"}),
    ],
)
def test_status_settings_alone_resolve_as_the_whole_config_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, env: dict[str, str]
) -> None:
    """load_status_config (what `status` reads) gives what load_config (what `run` reads)
    gives, for every way of naming the status file."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = write_config(tmp_path, MAIN.replace("[rig]", table + "\n[rig]"))
    assert load_status_config(path) == load_config(path).status


def test_status_settings_need_no_password_variants_or_slots_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing password file refuses the whole config, not its status settings."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    path = write_config(
        tmp_path, MAIN.replace("port = 18830", 'port = 18830\npassword_file = "gone.pass"')
    )
    (tmp_path / "variants.toml").unlink()
    assert any("mqtt.password_file" in p for p in problems_of(path))
    assert load_status_config(path).file == tmp_path / "gateway.status.json"


def test_status_settings_report_their_own_problems(tmp_path: Path) -> None:
    """A bad `[status]` table, or an unreadable main file, is still a ConfigError naming it."""
    path = write_config(tmp_path, MAIN + "\n[status]\ninterval = -1\n")
    with pytest.raises(ConfigError) as info:
        load_status_config(path)
    assert [p.field for p in info.value.problems] == ["status.interval"]
    with pytest.raises(ConfigError) as info:
        load_status_config(tmp_path / "none.toml")
    assert "no such file" in str(info.value)


def test_diff_variants_names_only_what_changed(tmp_path: Path) -> None:
    """diff_variants separates added, removed, changed and unchanged variants."""
    old = load_config(write_config(tmp_path)).variants
    new_text = VARIANTS.replace('spec = "V2_2"', 'spec = "V3"') + (
        '\n[[variant]]\nid = "new-one"\nport = "/dev/ttyUSB9"\n'
    )
    new = load_config(write_config(tmp_path, variants=new_text)).variants
    diff = diff_variants(old, new)
    assert diff.added == ("new-one",)
    assert diff.changed == ("iskra-dsmr22",)
    assert diff.unchanged == ("fluvius-t211",)
    assert diff.removed == ()
    assert diff_variants(old, old).empty


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway` with arguments; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    """check-config exits 0 on a valid config and 2 with file and field on stderr otherwise."""
    path = write_config(tmp_path)
    ok = run_cli("check-config", "--config", str(path))
    assert ok.returncode == 0, ok.stderr
    path = write_config(tmp_path, variants=VARIANTS.replace('"iskra-dsmr22"', '"a/b"'))
    bad = run_cli("check-config", "--config", str(path))
    assert bad.returncode == 2
    assert f"{tmp_path / 'variants.toml'}: variant[1].id:" in bad.stderr


def test_truncate_after_s_is_positive_in_framing_and_per_variant(tmp_path: Path) -> None:
    """`[framing] truncate_after_s` and a variant's own must be positive seconds (at most 60)."""
    cfg = load_config(write_config(tmp_path, MAIN + "[framing]\ntruncate_after_s = 2.5\n"))
    assert cfg.framing.truncate_after_s == 2.5 and cfg.variants[0].truncate_after_s is None
    probs = problems_of(write_config(tmp_path, MAIN + "[framing]\ntruncate_after_s = 0\n"))
    assert any("gateway.toml: framing.truncate_after_s:" in p for p in probs), probs
    bad = VARIANTS.replace('spec = "V2_2"', 'spec = "V2_2"\ntruncate_after_s = -1')
    probs = problems_of(write_config(tmp_path, variants=bad))
    assert any("variants.toml: variant[1].truncate_after_s:" in p for p in probs), probs


def test_the_schedule_comes_from_the_slots_file_by_default(tmp_path: Path) -> None:
    """Without `[schedule]` the source is "file": the slots file is read and watched."""
    cfg = load_config(write_config(tmp_path))
    assert cfg.schedule.source == "file" and len(cfg.slots) == 2
    assert tmp_path / "slots.toml" in cfg.watched_files


def test_a_schedule_from_the_broker_reads_no_slots(tmp_path: Path) -> None:
    """`source = "mqtt"`: neither the slots file (here missing) nor inline slots (here
    invalid) are read or watched; the variants still are."""
    main = MAIN + '\n[schedule]\nsource = "mqtt"\n\n[[slot]]\nholder = "Bad Name"\n'
    path = write_config(tmp_path, main)
    (tmp_path / "slots.toml").unlink()
    cfg = load_config(path)
    assert cfg.schedule.source == "mqtt" and cfg.slots == () and cfg.slots_file is None
    assert len(cfg.variants) == 2
    assert cfg.watched_files == (path, tmp_path / "variants.toml")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 variant(s), slots from the broker (p1/rig-a/schedule)" in result.stdout


def test_the_schedule_source_is_checked_and_may_be_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad source or key is named; the environment may set it; a running daemon reads the
    file with the source it started with."""
    probs = problems_of(write_config(tmp_path, MAIN + '[schedule]\nsource = "ftp"\n'))
    assert any(
        "gateway.toml: schedule.source: Input should be 'file' or 'mqtt'" in p for p in probs
    )
    probs = problems_of(write_config(tmp_path, MAIN + "[schedule]\nsources = 1\n"))
    assert any("schedule.sources: unknown setting" in p for p in probs), probs
    path = write_config(tmp_path)
    assert len(load_config(path, schedule_source="mqtt").slots) == 0
    monkeypatch.setenv("P1GW_SCHEDULE__SOURCE", "mqtt")
    cfg = load_config(path)
    assert cfg.schedule.source == "mqtt" and cfg.slots == ()
    cfg = load_config(path, schedule_source="file")
    assert cfg.schedule.source == "mqtt" and len(cfg.slots) == 2  # a restart will follow it
