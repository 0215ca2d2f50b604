"""The house: every arrow between agts' parts points one way (docs/architecture.md).

The import graph is read from the source (every ``import``, also those under ``TYPE_CHECKING`` and
inside functions), so a new upward arrow or circle fails here before anyone has to untangle it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import agts

ROOT = Path(__file__).resolve().parent.parent / "agts"

#: What each part may import (besides itself). Layers, top to bottom: the public face and the CLI;
#: the engine, which wires the parts; the readers and writers (query, execution, ingest,
#: retention), which hold the cold tier's library (archive); the database; the pure bottom.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_files": set(),
    "_aio": set(),
    "_dsn": {"errors"},
    "_args": {"errors"},
    "_arrow": {"errors"},
    "config": {"errors", "_dsn"},
    "positions": {"errors"},
    "sample": set(),
    "db": {"config", "errors", "_dsn"},
    "_migrations": {"db", "errors"},
    "_roles": {"errors"},
    "archive": {"_args", "_files", "config", "db", "errors"},
    "ingest": {"_args", "_arrow", "_files", "config", "db", "errors"},
    "query": {"_args", "archive", "config", "db", "errors"},
    "execution": {"_aio", "_args", "_arrow", "archive", "db", "errors"},
    "retention": {"_args", "archive", "config", "db", "errors"},
    "_engine": {"_aio", "_args", "_migrations", "archive", "config", "db", "errors", "ingest", "query",
                "retention"},
    "agts": {"_aio", "_engine", "_migrations", "_roles", "archive", "config", "db", "errors", "execution",
             "ingest", "query", "retention"},
    "cli": {"agts", "_args", "_engine", "_migrations", "_roles", "archive", "config", "db",
            "errors", "execution", "ingest", "positions", "query", "retention", "sample"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "agts"


def _imports() -> dict[str, set[str]]:
    """Module -> the agts modules it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        module = _module(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                graph[module].update(n for n in names if n.split(".")[0] == "agts")
            elif isinstance(node, ast.Import):
                graph[module].update(a.name for a in node.names if a.name.split(".")[0] == "agts")
    return graph


def _part_graph() -> dict[str, set[str]]:
    known = {_module(p) for p in ROOT.rglob("*.py")}
    parts: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        for target in targets:
            if target in known and _part(target) != _part(module):
                parts[_part(module)].add(_part(target))
    return parts


def test_every_part_is_listed() -> None:
    found = {_part(_module(p)) for p in ROOT.rglob("*.py")}
    assert found == set(ALLOWED)


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_arrows_point_down(part: str) -> None:
    upward = _part_graph().get(part, set()) - ALLOWED[part]
    assert not upward, f"{part} imports {sorted(upward)}, which it may not (see ALLOWED)"


def test_no_import_circle_between_parts() -> None:
    graph = _part_graph()
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert seen.get(nxt) != 1, f"import circle: {' -> '.join([*path, node, nxt])}"
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_only_the_public_face_and_the_cli_import_the_engine() -> None:
    importers = sorted(m for m, targets in _imports().items() if "agts._engine" in targets)
    assert all(m == "agts" or m.startswith("agts.cli") for m in importers), importers


def test_exported_names_live_in_agts() -> None:
    """Tracebacks and docs show ``agts.StorageEngine``, not a private module path."""
    wrong = {name: obj.__module__ for name in agts.__all__
             if isinstance(obj := getattr(agts, name), type) or callable(obj)
             if getattr(obj, "__module__", "agts") != "agts"}
    assert wrong == {}
