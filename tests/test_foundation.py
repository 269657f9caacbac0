"""The foundation: the package imports, the CLI answers, crcmod runs in C, the corpus is whole."""

import subprocess
import sys

import pytest

from gateway import corpus
from gateway.errors import ChecksumError, DecodeError, GatewayError


def test_cli_help_lists_commands() -> None:
    """`python -m gateway --help` runs and names the program."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True, check=True
    )
    assert "p1-gateway" in out.stdout


def test_crcmod_uses_its_c_extension() -> None:
    """The CRC runs in crcmod's C extension, not its pure-Python fallback."""
    import crcmod  # noqa: F401

    assert sys.modules["crcmod.crcmod"]._usingExtension


def test_contract_errors_are_gateway_errors() -> None:
    """ChecksumError and DecodeError both derive from GatewayError."""
    assert issubclass(ChecksumError, GatewayError)
    assert issubclass(DecodeError, GatewayError)


def test_corpus_is_complete_with_provenance() -> None:
    """Every corpus file has a provenance row and every row has its file."""
    names = {p.name for p in corpus.CORPUS_DIR.glob("*.txt")}
    rows = {e.name for e in corpus.entries()}
    assert names == rows
    assert len(rows) == 65


@pytest.mark.parametrize("status", list(corpus.CrcStatus))
def test_corpus_has_each_crc_status(status: corpus.CrcStatus) -> None:
    """The provenance table yields at least one file of each CRC status."""
    assert corpus.with_crc(status)
