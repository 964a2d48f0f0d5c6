"""The package order of proxy/ and a reader of its import graph: which imports point up, which form cycles.

The order is the one README's "Where things are" gives. Every import counts, including those inside
functions (a lazy import still ties the two modules together), except those under ``if TYPE_CHECKING:``,
which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ORDER = (
    "_ground",
    "stats",
    "config",
    "content",
    "upstream",
    "observe",
    "edge",
    "rollout",
    "shadow",
    "reports",
    "dataplane",
    "admin",
    "app",
    "demo",
)
GROUND = frozenset({"errors", "_types", "_tasks", "clock", "_version"})
TOP = frozenset({"cli", "__main__", "__init__"})
"""Top-level modules above every package: they may import anything."""


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root/proxy`` by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for f in sorted((root / "proxy").rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def layer(module: str) -> str | None:
    """The package a module belongs to in ORDER; None above the order; ``?name`` outside it."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if len(parts) == 1 and parts[0] in TOP:
        return None
    if len(parts) == 1 and parts[0] in GROUND:
        return "_ground"
    return parts[0] if parts[0] in ORDER else "?" + parts[0]


def _type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The proxy modules ``module`` imports when it runs; ``from pkg import mod`` counts as ``pkg.mod``."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.split(".")[0] == "proxy")
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node)
                if target.split(".")[0] == "proxy":
                    for a in node.names:
                        sub = f"{target}.{a.name}"
                        out.add(sub if sub in known else target)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)
    out.discard(module)
    return {m for m in out if m in known}


def import_graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports_of(m, p, known) for m, p in known.items()}


def upward_imports(root: Path) -> list[str]:
    """One line per import that points up the order, plus one per folder the order does not know."""
    bad: list[str] = []
    unknown: set[str] = set()
    for module, targets in sorted(import_graph(root).items()):
        src = layer(module)
        if src is None:
            continue
        if src.startswith("?"):
            unknown.add(src[1:])
            continue
        for target in sorted(targets):
            dst = layer(target)
            if dst is None or dst.startswith("?") or dst == src:
                continue
            if ORDER.index(dst) > ORDER.index(src):
                bad.append(f"{module} imports {target} ({src} -> {dst}, upward)")
    bad += [f"proxy/{name}/ is not in the package order" for name in sorted(unknown)]
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan's components)."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles
