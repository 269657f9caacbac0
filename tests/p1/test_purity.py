"""gateway/p1 stays sans-IO: no clocks, files, logging or printing in its code."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import gateway.p1

P1_DIR = Path(gateway.p1.__file__).parent
FORBIDDEN_MODULES = {
    "time",
    "logging",
    "io",
    "os",
    "pathlib",
    "socket",
    "serial",
    "sqlite3",
    "importlib",
    "hashlib",
    "subprocess",
    "shutil",
    "tempfile",
    "mmap",
}
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


#: Run in a fresh interpreter: import gateway.p1 and plan a code under every spec, noting every
#: file opened (the audit hook sees the import system's reads too) and the modules loaded.
_WATCH_FILES = """
import json, os, sys
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.fsdecode(args[0]))
    elif event in ("os.listdir", "os.scandir", "subprocess.Popen", "socket.connect"):
        opened.append(f"{event}:{args[0]!r}")
sys.addaudithook(hook)
import gateway.p1
from gateway.p1.specs import plan_for
for name in gateway.p1.SPEC_NAMES:
    gateway.p1.check_spec_name(name)
    plan_for(name, "1-0:1.8.1")
sys.addaudithook(lambda *a: None)
modules = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
print(json.dumps({"opened": opened, "modules": [f for f in modules if f]}))
"""


def test_importing_p1_reads_no_file_but_its_own_modules() -> None:
    """`import gateway.p1` and planning every spec open only the code of modules they import."""
    done = subprocess.run(
        [sys.executable, "-c", _WATCH_FILES], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    modules = {Path(f).resolve() for f in seen["modules"]}
    code = modules | {Path(f).resolve().parent for f in seen["modules"]}  # a package's folder
    strays = []
    for item in seen["opened"]:
        if item.startswith("os.listdir:") or item.startswith("os.scandir:"):
            continue  # the import system lists sys.path folders to find modules
        path = Path(item).resolve()
        if path.suffix == ".pyc" and path.parent.name == "__pycache__":
            path = path.parent.parent / (path.name.split(".", 1)[0] + ".py")
        if path not in code:
            strays.append(item)
    assert any("gateway/p1/_spec_table" in f for f in seen["modules"])
    assert strays == [], f"files read that no imported module is made of: {strays}"
