"""Logging: readable lines for people, JSON lines for machines, journald fields under systemd."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pytest_mock import MockerFixture

from gateway.logs import JournalRenderer, journal_field_name, resolve_format


def test_auto_format_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: journal under systemd, console on a terminal, JSON otherwise."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert resolve_format("auto", isatty=True) == "console"
    assert resolve_format("auto", isatty=False) == "json"
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert resolve_format("auto", isatty=True) == "journal"
    assert resolve_format("json", isatty=True) == "json"


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("variant", "VARIANT"),
        ("retry_in_s", "RETRY_IN_S"),
        ("_x", "X"),
        ("a-b.c", "A_B_C"),
        ("1st", "F_1ST"),
    ],
)
def test_journal_field_names_are_valid(key: str, field: str) -> None:
    """Log keys become journal field names of [A-Z0-9_], not starting with '_' or a digit."""
    assert journal_field_name(key) == field


def test_journal_renderer_sends_fields(mocker: MockerFixture) -> None:
    """Each key becomes a journal field beside MESSAGE and PRIORITY (journald is not here)."""
    send = mocker.patch("systemd.journal.send")
    renderer = JournalRenderer()
    renderer(None, "warning", {"event": "port lost", "level": "warning", "variant": "flu-1"})
    kwargs = send.call_args.kwargs
    assert kwargs["MESSAGE"] == "port lost variant=flu-1"
    assert kwargs["PRIORITY"] == "4"
    assert kwargs["VARIANT"] == "flu-1"
    assert kwargs["SYSLOG_IDENTIFIER"] == "p1-gateway"


def test_json_format_writes_one_json_object_per_line() -> None:
    """The JSON format writes parseable lines with the event and its keys."""
    code = (
        "from gateway.logs import configure_logging; import structlog;"
        "configure_logging('json', 'info');"
        "log = structlog.get_logger(); log.debug('hidden'); log.info('port opened', variant='v1')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "port opened"
    assert lines[0]["variant"] == "v1"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
