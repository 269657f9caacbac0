"""The project's telegram corpus: real telegrams with their provenance, read from README.md."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent


class CrcStatus(enum.Enum):
    """What the provenance table says of a corpus file's CRC."""

    VALID = "valid"
    INVALID = "invalid"
    ABSENT = "absent"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class CorpusEntry:
    """One corpus file and what its provenance row says about it."""

    name: str
    source: str
    meter: str
    version: str
    crc: CrcStatus
    notes: str

    @property
    def path(self) -> Path:
        """The file's path on disk."""
        return CORPUS_DIR / self.name

    def read(self) -> bytes:
        """The file's exact bytes."""
        return self.path.read_bytes()


def _crc_status(cell: str) -> CrcStatus:
    """Map the table's 'CRC valid' cell to a status."""
    text = cell.strip().lower()
    if text.startswith("yes"):
        return CrcStatus.VALID
    if text.startswith("absent"):
        return CrcStatus.ABSENT
    if "truncated" in text:
        return CrcStatus.TRUNCATED
    if text.startswith("no"):
        return CrcStatus.INVALID
    raise ValueError(f"unknown CRC status in corpus README: {cell!r}")


@cache
def entries() -> tuple[CorpusEntry, ...]:
    """Every corpus file with its provenance, in the README's order."""
    rows = []
    for line in (CORPUS_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not cells[0].endswith(".txt"):
            continue
        name, source, _path, _commit, meter, version, _origin, crc, notes = cells
        rows.append(CorpusEntry(name, source, meter, version, _crc_status(crc), notes))
    return tuple(rows)


def entry(name: str) -> CorpusEntry:
    """The corpus entry of one file, by file name (with or without '.txt')."""
    wanted = name if name.endswith(".txt") else name + ".txt"
    for e in entries():
        if e.name == wanted:
            return e
    raise KeyError(name)


def with_crc(*statuses: CrcStatus) -> tuple[CorpusEntry, ...]:
    """The entries whose CRC status is one of those given."""
    return tuple(e for e in entries() if e.crc in statuses)
