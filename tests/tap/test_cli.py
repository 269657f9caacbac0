"""`p1-gateway tap`'s arguments: bad ones exit 2 with a message; the default client id."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.tap.service import PtySpec, TapSettings, TcpSpec, default_client_id


def run_tap(args: list[str]) -> int:
    """`p1-gateway tap ARGS` in this process: its exit code (argparse's SystemExit too)."""
    try:
        return main(["tap", *args])
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def base(tmp_path: Path) -> list[str]:
    """Valid arguments but the outputs."""
    password = tmp_path / "pass"
    password.write_text("secret\n")
    return [
        "--host", "127.0.0.1", "--username", "acme", "--password-file", str(password),
        "--rig", "rig-a",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tcp", "v1"], "expected V=ADDR:PORT"),
        (["--tcp", "v1=127.0.0.1"], "expected V=ADDR:PORT"),
        (["--tcp", "v1=127.0.0.1:99999"], "not 1 to 65535"),
        (["--tcp", "V 1=127.0.0.1:2323"], "invalid variant id"),
        (["--pty", "v1="], "expected V=PATH"),
        (["--tcp", "v1=127.0.0.1:2323", "--line-rate", "0"], "baud rate 0"),
        (["--tcp", "v1=127.0.0.1:2323", "--line-rate", "fast"], "not a baud rate"),
        (["--tcp", "v1=127.0.0.1:2323", "--port", "x"], "not a port number"),
        (["--tcp", "v1=127.0.0.1:2323", "--client-id", "a b"], "client id"),
        ([], "at least one --tcp"),
        (["--tcp", "v1=127.0.0.1:2323", "--tcp", "v2=127.0.0.1:2323"], "named twice"),
        (["--pty", "v1=/no/such/folder/p1"], "does not exist"),
        (["--tcp", "v1=127.0.0.1:2323", "--tls-ca-file", "/no/such/ca.pem"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    base: list[str], extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each kind of bad argument exits 2 and says what is wrong."""
    assert run_tap(base + extra) == 2
    assert message in capsys.readouterr().err


def test_missing_required_arguments_and_an_unreadable_password_file_exit_2(
    base: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No --rig, a bad rig id, or a password file that cannot be read: exit 2."""
    assert run_tap(["--host", "h", "--username", "acme", "--tcp", "v=h:1"]) == 2
    assert "required" in capsys.readouterr().err
    bad_rig = [*base[:-1], "Rig A", "--tcp", "v1=127.0.0.1:2323"]
    assert run_tap(bad_rig) == 2
    assert "invalid rig id" in capsys.readouterr().err
    missing = [*base, "--tcp", "v1=127.0.0.1:2323"]
    missing[missing.index("--password-file") + 1] = str(tmp_path / "nothing")
    assert run_tap(missing) == 2
    assert "cannot read the password file" in capsys.readouterr().err


def test_a_file_where_the_pty_link_goes_is_refused(
    base: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The tap never replaces a file with its symlink."""
    (tmp_path / "p1").write_text("mine")
    assert run_tap([*base, "--pty", f"v1={tmp_path / 'p1'}"]) == 2
    assert "not a symlink" in capsys.readouterr().err
    assert (tmp_path / "p1").read_text() == "mine"


def test_the_default_client_id_is_stable_per_user_rig_host_and_variants() -> None:
    """The same user, rig, host and variants give the same id; other variants another one."""
    one = default_client_id("acme", "rig-a", ("v1", "v2"), False, "lab pc")
    assert one == default_client_id("acme", "rig-a", ("v2", "v1"), False, "lab pc")
    assert one.startswith("p1-tap-acme-rig-a-lab-pc-")
    assert one != default_client_id("acme", "rig-a", ("v1",), False, "lab pc")
    assert one != default_client_id("acme", "rig-a", ("v1", "v2"), True, "lab pc")
    assert one != default_client_id("acme", "rig-b", ("v1", "v2"), False, "lab pc")
    settings = TapSettings(
        host="h",
        port=1,
        username="acme",
        password="p",
        rig="rig-a",
        tcp=(TcpSpec("v2", "127.0.0.1", 1),),
        pty=(PtySpec("v1", Path("/tmp/x")), PtySpec("v2", Path("/tmp/y"))),
    )
    assert settings.variants == ("v2", "v1")
    assert settings.effective_client_id().startswith("p1-tap-acme-rig-a-")
    explicit = TapSettings(host="h", port=1, username="acme", password="p", rig="r", client_id="c")
    assert explicit.effective_client_id() == "c"
