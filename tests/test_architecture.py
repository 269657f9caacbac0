"""The tree shows the design: one-way arrows between the rooms, no import cycles, small modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gateway"
#: Generated or data files, not read or written by hand.
GENERATED = {"gateway.p1._spec_table", "gateway.p1.spec_table"}
#: About this many lines is as much as one reader keeps in view.
MAX_LINES = 700
#: What each room may not import: the pure core nothing of the shells, the shells not each other.
FORBIDDEN = {
    "gateway.p1": (
        "gateway.mux",
        "gateway.publish",
        "gateway.sim",
        "gateway.bench",
        "gateway.daemon",
        "gateway.app",
        "gateway.lab",
    ),
    "gateway.mux": (
        "gateway.publish",
        "gateway.sim",
        "gateway.bench",
        "gateway.daemon",
        "gateway.app",
        "gateway.lab",
    ),
    "gateway.publish": (
        "gateway.mux",
        "gateway.sim",
        "gateway.bench",
        "gateway.daemon",
        "gateway.app",
        "gateway.lab",
    ),
    # The gateway's daemon knows nothing of the lab; the lab reads config, identifiers and
    # errors, and nothing of the daemon, its ports, the simulator, the benches or the devkit.
    "gateway.daemon": ("gateway.lab",),
    "gateway.lab": (
        "gateway.mux",
        "gateway.sim",
        "gateway.bench",
        "gateway.daemon",
        "gateway.app",
        "gateway.devkit",
    ),
}


def module_name(path: Path) -> str:
    """The dotted name of a module file under gateway/."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every hand-written module of the package (the corpus holds data, not code)."""
    found = {module_name(p): p for p in ROOT.rglob("*.py") if "corpus" not in p.parts}
    return found


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every gateway module `name` imports: at the top, under TYPE_CHECKING, or in a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield from _known(sub if sub in known else base, known)


def _known(target: str, known: set[str]) -> Iterator[str]:
    """The nearest gateway module a dotted import names, if it is one of ours."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    if target.startswith("gateway"):
        yield target


def graph() -> dict[str, set[str]]:
    """Module -> the gateway modules it imports."""
    mods = modules()
    known = set(mods)
    return {n: {t for t in imports(n, p, known) if t != n} for n, p in mods.items()}


def test_no_import_cycles() -> None:
    """No module imports, through any chain, one that imports it back."""
    g = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_arrows_point_one_way(room: str) -> None:
    """The P1 core imports no shell; the multiplexer and the publisher import neither other;
    the lab and the daemon neither other."""
    bad = [
        f"{mod} imports {target}"
        for mod, targets in graph().items()
        if mod == room or mod.startswith(room + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[room])
    ]
    assert not bad, "\n".join(bad)


def test_no_runtime_module_imports_the_benchmarks() -> None:
    """The daemon's code does not import the benchmarks (they import it, not the reverse)."""
    bad = [
        f"{mod} imports {target}"
        for mod, targets in graph().items()
        if not mod.startswith("gateway.bench") and mod != "gateway.cli"
        for target in targets
        if target.startswith("gateway.bench")
    ]
    assert not bad, "\n".join(bad)


def test_modules_stay_readable() -> None:
    """No hand-written module is over about 700 lines."""
    long = [
        f"{name}: {n} lines"
        for name, path in modules().items()
        if name not in GENERATED and (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)
