"""The systemd unit and scripts/install, checked without touching the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "p1-gateway.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit's settings, key -> values in order (comments skipped)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_is_notify_with_watchdog_restart_and_serial_access() -> None:
    """The unit is Type=notify with a HUP reload, a watchdog, restarts and serial ports allowed."""
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["StartLimitIntervalSec"] == ["0"]
    assert "WatchdogSec" in s
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["StateDirectory"] == ["p1-gateway"]
    assert "char-ttyUSB rw" in s["DeviceAllow"]
    assert "PrivateDevices" not in s
    assert not any("time-sync.target" in v for values in s.values() for v in values)


def test_status_looks_for_the_services_file_where_the_unit_puts_it() -> None:
    """`status` from a shell looks in /run/<RuntimeDirectory>, the $RUNTIME_DIRECTORY in which
    the service writes its status file by default."""
    from gateway.daemon.status import SERVICE_STATUS_FILE

    (runtime,) = unit_settings()["RuntimeDirectory"]
    assert Path("/run") / runtime / "status.json" == SERVICE_STATUS_FILE


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit, with no warning, once its paths exist."""
    unit = tmp_path / "p1-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/p1-gateway", str(ROOT)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert str(unit) not in out.stderr, out.stderr  # any warning names the file


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The verify check above can fail: a misspelt Type is reported."""
    unit = tmp_path / "p1-gateway.service"
    text = UNIT.read_text().replace("/opt/p1-gateway", str(ROOT))
    unit.write_text(text.replace("Type=notify", "Type=notifyy"))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert str(unit) in out.stderr


def test_install_into_destdir(tmp_path: Path) -> None:
    """scripts/install --destdir stages code, config, unit, sysusers and udev rule."""
    dest = tmp_path / "root"
    subprocess.run(
        [str(ROOT / "scripts" / "install"), "--destdir", str(dest), "--prefix", "/opt/p1gw"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    unit = (dest / "etc/systemd/system/p1-gateway.service").read_text()
    assert "ExecStart=/opt/p1gw/.venv/bin/p1-gateway run" in unit
    assert "/opt/p1-gateway" not in unit
    for rel in (
        "etc/p1-gateway/p1-gateway.toml",
        "etc/p1-gateway/variants.toml",
        "etc/p1-gateway/slots.toml",
        "etc/udev/rules.d/99-p1-gateway.rules",
        "usr/lib/sysusers.d/p1-gateway.conf",
        "opt/p1gw/gateway/p1/framer.py",
        "opt/p1gw/scripts/setup",
    ):
        assert (dest / rel).is_file(), rel
    assert not (dest / "opt/p1gw/.git").exists()
    assert os.access(dest / "opt/p1gw/scripts/setup", os.X_OK)
    assert os.readlink(dest / "usr/local/bin/p1-gateway") == "/opt/p1gw/.venv/bin/p1-gateway"


def install(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/install --destdir DEST with more arguments; it must succeed."""
    return subprocess.run(
        [str(ROOT / "scripts" / "install"), "--destdir", str(dest), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_install_again_repoints_the_command_link_and_keeps_a_foreign_command(
    tmp_path: Path,
) -> None:
    """The /usr/local/bin link is made again on every install (a new --prefix re-points it);
    a p1-gateway there that is not a link is left alone."""
    dest = tmp_path / "root"
    link = dest / "usr/local/bin/p1-gateway"
    install(dest)
    install(dest)
    assert os.readlink(link) == "/opt/p1-gateway/.venv/bin/p1-gateway"
    install(dest, "--prefix", "/srv/p1")
    assert os.readlink(link) == "/srv/p1/.venv/bin/p1-gateway"
    link.unlink()
    link.write_text("#!/bin/sh\n")
    out = install(dest)
    assert link.read_text() == "#!/bin/sh\n"
    assert f"kept {link}" in out.stdout


def test_uninstall_removes_what_install_made_but_the_config_and_spool(tmp_path: Path) -> None:
    """--uninstall removes the code, unit, udev rule, sysusers file and command link; the
    technician's config and the spool stay."""
    dest = tmp_path / "root"
    install(dest, "--prefix", "/opt/p1gw")
    (dest / "etc/p1-gateway/mqtt.pass").write_text("secret\n")
    (dest / "var/lib/p1-gateway/spool.sqlite").write_text("")
    install(dest, "--prefix", "/opt/p1gw", "--uninstall")
    for rel in (
        "opt/p1gw",
        "usr/local/bin/p1-gateway",
        "etc/systemd/system/p1-gateway.service",
        "etc/udev/rules.d/99-p1-gateway.rules",
        "usr/lib/sysusers.d/p1-gateway.conf",
    ):
        assert not os.path.lexists(dest / rel), rel
    for rel in ("etc/p1-gateway/p1-gateway.toml", "etc/p1-gateway/mqtt.pass"):
        assert (dest / rel).is_file(), rel
    assert (dest / "var/lib/p1-gateway/spool.sqlite").exists()


def test_uninstall_leaves_what_is_not_its_own(tmp_path: Path) -> None:
    """--uninstall with a --prefix that holds no p1-gateway removes nothing there, and a
    link to another prefix's command stays."""
    dest = tmp_path / "root"
    install(dest, "--prefix", "/opt/p1gw")
    other = dest / "opt/other"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("mine\n")
    install(dest, "--prefix", "/opt/other", "--uninstall")
    assert (other / "keep.txt").is_file()
    assert os.readlink(dest / "usr/local/bin/p1-gateway") == "/opt/p1gw/.venv/bin/p1-gateway"
    assert (dest / "opt/p1gw/scripts/install").is_file()


def test_install_keeps_edited_config(tmp_path: Path) -> None:
    """A second install never overwrites a technician's config; the new one lands as .example."""
    dest = tmp_path / "root"
    cmd = [str(ROOT / "scripts" / "install"), "--destdir", str(dest)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    edited = dest / "etc/p1-gateway/variants.toml"
    edited.write_text("# edited on the rig\n")
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert edited.read_text() == "# edited on the rig\n"
    assert (dest / "etc/p1-gateway/variants.toml.example").is_file()


def _setup_copy(tmp_path: Path) -> Path:
    """scripts/setup copied into an empty tree, so that no test of its options can touch .venv."""
    script = tmp_path / "tree" / "scripts" / "setup"
    script.parent.mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "setup", script)
    return script


def _fake_python(tmp_path: Path, claims: str) -> Path:
    """A `python3` that answers setup's question about its real path with `claims`, else fails."""
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/bin/sh\n[ "$1" = -c ] && echo {claims} && exit 0\nexit 1\n')
    fake.chmod(0o755)
    return fake


def _setup(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a copy of scripts/setup with extra environment variables (PYTHON unset unless given)."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, env={**base, **env}
    )


def test_setup_prefers_the_system_python_to_the_one_first_on_path(tmp_path: Path) -> None:
    """Without PYTHON, the .venv is made from /usr/bin/python3 (3.11+), not PATH's python3."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no /usr/bin/python3 here")
    version = subprocess.run(
        [str(system), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    )
    if version.stdout.strip() != "True":
        pytest.skip("/usr/bin/python3 is older than 3.11")
    fake = _fake_python(tmp_path, "/home/someone/.pyenv/bin/python3.11")
    script = _setup_copy(tmp_path)
    path = f"{fake.parent}:{os.environ['PATH']}"
    chosen = _setup(script, "--print-python", PATH=path)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == os.path.realpath(system)
    told = _setup(script, "--print-python", PATH=path, PYTHON=str(fake))
    assert told.stdout.strip() == "/home/someone/.pyenv/bin/python3.11"


@pytest.mark.parametrize(
    ("claims", "refused"),
    [
        ("/root/.pyenv/versions/3.11.7/bin/python3.11", True),
        ("/home/tech/.local/bin/python3.11", True),
        ("/run/user/1000/python3.11", True),
        ("/usr/bin/python3.11", False),
        ("/usr/local/bin/python3.12", False),
    ],
)
def test_setup_check_service_refuses_an_interpreter_the_service_cannot_reach(
    tmp_path: Path, claims: str, refused: bool
) -> None:
    """--check-service (run by install first) refuses interpreters under ProtectHome's paths."""
    script = _setup_copy(tmp_path)
    out = _setup(script, "--check-service", PYTHON=str(_fake_python(tmp_path, claims)))
    if refused:
        assert out.returncode == 1
        assert "ProtectHome" in out.stderr and claims in out.stderr
    else:
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == claims
    assert not (script.parent.parent / ".venv").exists()


def test_install_checks_the_interpreter_before_writing_anything() -> None:
    """scripts/install asks setup --check-service before its first write (outside DESTDIR mode)."""
    text = (ROOT / "scripts" / "install").read_text()
    check = text.index('"$src/scripts/setup" --check-service')
    assert check < text.index("mkdir -p")
