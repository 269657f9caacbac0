"""The shipped spec table is dsmr_parser's specifications, and the daemon's imports stay light."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.errors import DecodeError
from gateway.p1 import SPEC_NAMES, _spec_table
from gateway.p1.specs import Kind, check_spec_name, plan_for

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "regen_spec_table.py"
TABLE = Path(_spec_table.__file__)


@pytest.fixture(scope="module")
def regen() -> ModuleType:
    """tools/regen_spec_table.py, loaded as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("regen_spec_table", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_table_is_what_the_installed_dsmr_parser_defines(regen) -> None:
    """Rows and digest match dsmr_parser (after an upgrade: python tools/regen_spec_table.py)."""
    assert regen.describe_dsmr_specs() == _spec_table.SPECS, "run tools/regen_spec_table.py"
    assert regen.dsmr_sources_digest() == _spec_table.DSMR_SOURCES_SHA256


def test_the_shipped_table_is_the_tools_output_to_the_byte(regen) -> None:
    """Regenerated in memory, the table's text is the file's: nobody edited it by hand."""
    assert regen.render() == TABLE.read_text(encoding="utf-8"), "run tools/regen_spec_table.py"


def test_the_tool_writes_the_table_and_finds_a_stale_one(regen, tmp_path: Path) -> None:
    """The tool writes what is shipped; --check passes on it and fails on a changed copy."""
    written = tmp_path / "table.py"
    assert regen.main(["--output", str(written)]) == 0
    assert written.read_text(encoding="utf-8") == TABLE.read_text(encoding="utf-8")
    assert regen.main(["--check", "--output", str(written)]) == 0
    written.write_text(written.read_text(encoding="utf-8").replace('"V5"', '"V6"'))
    assert regen.main(["--check", "--output", str(written)]) == 1


def test_the_tool_runs_as_a_script() -> None:
    """`python tools/regen_spec_table.py --check` from another folder: the table is current."""
    done = subprocess.run(
        [sys.executable, str(TOOL), "--check"],
        cwd=TOOL.parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "current" in done.stdout


def test_the_table_owns_its_types_and_imports_nothing() -> None:
    """The generated module has no import at all: it defines SpecRow itself."""
    tree = ast.parse(TABLE.read_text(encoding="utf-8"))
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports == []
    assert _spec_table.SpecRow is not None
    assert sorted(_spec_table.SPECS) == list(SPEC_NAMES)


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
    assert not loaded & {"cryptography", "dlms_cosem", "asn1crypto", "dsmr_parser"}
