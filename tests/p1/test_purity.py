"""gateway/p1 stays sans-IO: no clocks, files, logging or printing in its code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gateway.p1

P1_DIR = Path(gateway.p1.__file__).parent
FORBIDDEN_MODULES = {"time", "logging", "io", "os", "pathlib", "socket", "serial", "sqlite3"}
FORBIDDEN_CALLS = {"open", "print", "input"}
CLOCK_ATTRIBUTES = {"now", "today", "utcnow", "monotonic", "perf_counter", "time_ns"}
GREP_PATTERNS = [
    re.compile(r"^\s*(import|from)\s+(time|logging)\b"),
    re.compile(r"(?<![\w.])(open|print)\("),
]


def _sources() -> list[Path]:
    """Every Python file of gateway/p1."""
    files = sorted(P1_DIR.glob("*.py"))
    assert len(files) >= 6
    return files


def test_p1_imports_no_clock_logging_or_io_module() -> None:
    """No module of gateway/p1 imports time, logging or an IO module."""
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & FORBIDDEN_MODULES, f"{path.name}:{node.lineno} imports {names}"


def test_p1_calls_no_open_print_or_clock() -> None:
    """No code in gateway/p1 calls open(), print() or a clock such as datetime.now()."""
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {func.id}"
            elif isinstance(func, ast.Attribute):
                assert func.attr not in CLOCK_ATTRIBUTES, (
                    f"{path.name}:{node.lineno} .{func.attr}()"
                )


def test_the_words_themselves_do_not_appear_as_code() -> None:
    """A plain grep agrees: no 'import time', 'import logging', 'open(' or 'print(' lines."""
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern in GREP_PATTERNS:
                assert not pattern.search(code), f"{path.name}:{number}: {line.strip()}"
