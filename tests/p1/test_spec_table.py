"""The shipped spec table is dsmr_parser's specifications, and the daemon's imports stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.errors import DecodeError
from gateway.p1 import spec_table, specs
from gateway.p1.specs import Kind, check_spec_name, describe_dsmr_specs, plan_for


def test_the_shipped_table_is_what_the_installed_dsmr_parser_defines() -> None:
    """Rows and digest match dsmr_parser (after an upgrade, regenerate: specs.REGENERATE)."""
    assert describe_dsmr_specs() == spec_table.SPECS, specs.REGENERATE
    assert specs.dsmr_sources_digest() == spec_table.DSMR_SOURCES_SHA256, specs.REGENERATE


def test_the_rows_come_from_the_table_while_the_digest_matches() -> None:
    """spec_rows returns the shipped table itself, not a fresh reading of dsmr_parser."""
    assert specs.spec_rows() is spec_table.SPECS


def test_a_digest_mismatch_reads_dsmr_parser_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the sources differ from the table's, the rows are read from dsmr_parser."""
    monkeypatch.setattr(spec_table, "DSMR_SOURCES_SHA256", "0" * 64)
    specs.spec_rows.cache_clear()
    try:
        rows = specs.spec_rows()
        assert rows is not spec_table.SPECS
        assert rows == spec_table.SPECS
    finally:
        specs.spec_rows.cache_clear()


def test_spec_names_are_checked_without_dsmr_parser() -> None:
    """check_spec_name knows the spec names and refuses others with a DecodeError."""
    assert check_spec_name("V5") == "V5"
    assert check_spec_name("auto") == "auto"
    with pytest.raises(DecodeError, match="unknown telegram spec"):
        check_spec_name("V6")


def test_plans_from_the_table() -> None:
    """A few plans read from the rows: a register, an M-Bus reading, the failure log."""
    assert plan_for("V5", "1-0:1.8.1").kind is Kind.DECIMAL
    assert plan_for("V5", "0-1:24.2.1").kind is Kind.MBUS
    assert plan_for("V5", "1-0:99.97.0").kind is Kind.PROFILE
    assert plan_for("BELGIUM_FLUVIUS", "0-0:98.1.0").kind is Kind.MAX_DEMAND
    assert plan_for("V5", "9-9:9.9.9").kind is Kind.UNKNOWN


def _modules_after(code: str) -> set[str]:
    """The top-level names in sys.modules after running `code` in a fresh interpreter."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\nimport sys\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    return set(out.stdout.split())


def test_decoding_planning_does_not_import_the_crypto_stack() -> None:
    """Planning every spec's codes and decoding the corpus loads no cryptography/dlms_cosem."""
    loaded = _modules_after(
        "import gateway.p1\nfrom gateway.p1.specs import SPEC_NAMES, plan_for, check_spec_name\n"
        "[plan_for(s, '1-0:1.8.1') for s in SPEC_NAMES]\ncheck_spec_name('V5')\n"
        "from gateway import corpus\nfrom gateway.p1 import Framer, decode_telegram\n"
        "frames = [f for e in corpus.with_crc(corpus.CrcStatus.VALID)\n"
        "          for f in Framer().feed(e.read()) if getattr(f, 'crc_ok', None)]\n"
        "assert frames and [decode_telegram(f.raw) for f in frames]"
    )
    assert "gateway" in loaded
    assert not loaded & {"cryptography", "dlms_cosem", "asn1crypto"}
