"""The house keeps its shape: imports only point down the layers, no circle, small rooms, thin faces, and
a core that names no protocol (docs/architecture.md). Drawn from the source with ``ast``, so the test
sees what a maintainer reading the code sees; imports under ``if TYPE_CHECKING:`` do not run and are
not counted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pytest_ubench import protocols

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_ubench"

# Ground up: a module may import its own layer's modules and lower ones, never a higher one.
LAYERS = [
    {"_version", "logs", "interrupts", "metrics"},
    {"recipes"},
    {"orchestrators"},
    {"load"},
    {"protocols"},
    {"monitor"},
    {"session"},
    {"report"},
    {"fixture", "plugin", "pytest_options", "stash", "cli", "__init__", "__main__"},
    {"servers", "testing"},  # programs: the embedded default server, test servers and doubles
]
# Modules that hold the run: none of them names a protocol (each lives in protocols/, one per family).
CORE = [
    "session",
    "load/planning.py",
    "recipes",
    "report",
    "metrics",
    "plugin.py",
    "pytest_options.py",
    "fixture.py",
    "cli",
]
# A protocol's name that is also an ordinary word in a core module, and why.
NOT_A_PROTOCOL = {
    ("recipes/schema.py", "openai-chat"): "the protocol of a recipe that names none",
    ("recipes/deployment.py", "http"): "a health check's kind",
    ("session/services.py", "http"): "a URL scheme",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports when it runs (at top level or inside functions)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _runtime_imports(name, path, set(mods)) for name, path in mods.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_imports_only_point_down_the_layers() -> None:
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert upward == []


def test_no_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_rooms_are_small_and_the_faces_thin() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 500 and not p.startswith("testing/")} == {}
    assert sizes["plugin.py"] <= 250
    assert {p: n for p, n in sizes.items() if p.startswith("cli/") and n > 300} == {}


def _strings(tree: ast.AST) -> set[str]:
    """String constants that are not docstrings."""
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs}  # fmt: skip


def test_the_core_names_no_protocol() -> None:
    names = set(protocols.names())
    parts = {p.part.key for p in map(protocols.get, names) if p.part is not None}
    assert {"openai-chat", "redis", "fio", "vector"} <= names  # the registry is what we think it is
    files = [
        f for entry in CORE for f in ([PACKAGE / entry] if entry.endswith(".py") else (PACKAGE / entry).rglob("*.py"))
    ]
    found = []
    for path in files:
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text())
        hits = {s for s in _strings(tree) if s in names | parts and (rel, s) not in NOT_A_PROTOCOL}
        found += [f"{rel}: {s!r}" for s in sorted(hits)]
        found += [
            f"{rel}: imports {node.module}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.level
            and node.module.startswith("protocols.") and node.module.split(".")[1] not in ("base",)
        ]  # fmt: skip
    assert found == []


@pytest.mark.parametrize("name", ["openai-chat", "fio", "vector"])
def test_every_protocol_is_found_through_its_entry_point(name: str) -> None:
    proto = protocols.get(name)
    assert name in proto.names and callable(proto.plan)
