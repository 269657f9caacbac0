"""LAB.toml: defaults, paths, environment overrides, and whole refusal of a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.lab.settings import load_lab_settings
from tests.support.mosquitto import REPO


def write(folder: Path, text: str) -> Path:
    """A LAB.toml with this text and a password file beside it."""
    (folder / "mqtt.pass").write_text("secret\nignored\n")
    path = folder / "lab.toml"
    path.write_text(text)
    return path


def test_the_defaults_are_the_contracts(tmp_path: Path) -> None:
    """22 h days, 2 h turnover, 7 days' notice, Brussels, prefix p1; paths beside the file."""
    path = write(
        tmp_path,
        '[lab]\ndb = "lab.sqlite"\n[mqtt]\nusername = "planner"\npassword_file = "mqtt.pass"\n',
    )
    settings = load_lab_settings(path)
    lab = settings.lab
    assert (lab.slot_hours, lab.turnover_hours, lab.notice_days) == (22, 2, 7)
    assert str(settings.zone) == "Europe/Brussels" and lab.rigs == ()
    assert lab.db == tmp_path / "lab.sqlite"
    assert settings.mqtt.topic_prefix == "p1" and settings.mqtt_password() == "secret"


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P1LAB_MQTT__HOST and P1LAB_LAB__SLOT_HOURS win over the file."""
    path = write(tmp_path, '[mqtt]\nusername = "planner"\nhost = "a"\n')
    monkeypatch.setenv("P1LAB_MQTT__HOST", "central.lan")
    monkeypatch.setenv("P1LAB_LAB__SLOT_HOURS", "0.01")
    settings = load_lab_settings(path)
    assert (settings.mqtt.host, settings.lab.slot_hours) == ("central.lan", 0.01)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[lab]\nrigs = ["rig-a", "lab"]\n', "lab.rigs"),
        ('[lab]\nrigs = ["rig-a", "rig-a"]\n', "lab.rigs"),
        ("[lab]\nslot_hours = 25\n", "lab.slot_hours"),
        ("[lab]\nturnover_hours = -1\n", "lab.turnover_hours"),
        ('[lab]\nzone = "Mars/Olympus"\n', "lab.zone"),
        ("[lab]\ncolour = 1\n", "lab.colour"),
        ('[mqtt]\nusername = "p"\npassword_file = "missing"\n', "mqtt.password_file"),
        ('[mqtt]\nusername = "p"\ntopic_prefix = "p1/#"\n', "mqtt.topic_prefix"),
        ("[mqtt]\nport = 1\n", "mqtt.username"),
        ("[mqtt\n", "(syntax)"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    """Each problem names the file and the field."""
    if "[mqtt]" not in text and text != "[mqtt\n":
        text += '[mqtt]\nusername = "planner"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_lab_settings(path)
    assert any(p.field.startswith(field) and p.file == str(path) for p in caught.value.problems), (
        caught.value
    )


def test_the_shipped_lab_toml_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/lab.toml loads (its password file pointed at one that exists)."""
    monkeypatch.setenv("P1LAB_MQTT__PASSWORD_FILE", str(write(tmp_path, "").parent / "mqtt.pass"))
    settings = load_lab_settings(REPO / "config" / "lab.toml")
    assert settings.lab.rigs == ("rig-a", "rig-b") and settings.mqtt.username == "planner"
