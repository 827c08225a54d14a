"""The rules the package layout keeps (issue 10), checked on its source.

Imports are read from the AST, type-only ones included (``if TYPE_CHECKING:``
imports are coupling too), function-level ones as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_vaurien"
NAME = "pytest_vaurien"

#: Modules that may import pytest.
PYTEST_MODULES = {f"{NAME}.plugin", f"{NAME}.pytest_hookspecs"}
#: Where gevent may be imported.
GEVENT_PREFIXES = (f"{NAME}.engine", f"{NAME}.handlers", f"{NAME}.api")
#: Modules that neither touch sockets nor pytest: parsing and decisions only.
PURE = [
    f"{NAME}.address",
    f"{NAME}.behavior",
    f"{NAME}.errors",
    f"{NAME}.plan",
    f"{NAME}.settings",
    f"{NAME}.handlers.base",
    f"{NAME}.handlers.context",
    f"{NAME}.echo",
    f"{NAME}.schedule",
    f"{NAME}.rules",
    f"{NAME}.records",
    f"{NAME}.protocols",
    f"{NAME}.protocols.base",
    f"{NAME}.protocols.http",
    f"{NAME}.protocols.http_match",
    f"{NAME}.protocols.sql_match",
    f"{NAME}.waits",
    f"{NAME}.routes",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in its source."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pytest_vaurien import hookspecs`` imports a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


IMPORTS = {name: _imports(name) for name in MODULES}


def _internal(name: str) -> set[str]:
    return {target for target in IMPORTS[name] if target in MODULES and target != name}


def test_the_package_has_no_import_cycle():
    graph = {name: _internal(name) for name in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _importers_of(prefix: str) -> set[str]:
    return {
        name
        for name, targets in IMPORTS.items()
        if any(t == prefix or t.startswith(prefix + ".") for t in targets)
    }


def test_only_the_plugin_modules_import_pytest():
    assert _importers_of("pytest") | _importers_of("_pytest") <= PYTEST_MODULES


def test_gevent_is_imported_only_under_engine_and_handlers():
    outside = {
        name
        for name in _importers_of("gevent")
        if not any(name == p or name.startswith(p + ".") for p in GEVENT_PREFIXES)
    }
    assert not outside


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_gevent_nor_pytest(module):
    assert not (_importers_of("gevent") | _importers_of("pytest")) & {module}


def test_the_faces_never_import_each_other():
    faces = {f"{NAME}.plugin", f"{NAME}.cli", f"{NAME}.api"}
    for face in faces:
        assert not _internal(face) & (faces - {face}), face


@pytest.mark.parametrize(
    "module",
    [
        NAME,
        f"{NAME}.behavior",
        f"{NAME}.settings",
        f"{NAME}.plan",
        f"{NAME}.handlers",
        f"{NAME}.registry",
        f"{NAME}.schedule",
        f"{NAME}.rules",
        f"{NAME}.protocols.http",
    ],
)
def test_importing_a_pure_module_loads_neither_gevent_nor_pytest(module):
    """Checked in a fresh interpreter: transitive imports count here."""
    code = (
        f"import sys, {module}\n"
        "loaded = sorted(m for m in ('gevent', 'pytest', '_pytest') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""


def test_the_public_names_still_import_from_the_top():
    code = (
        "from pytest_vaurien import BaseHandler, Proxy, Rule, hookimpl, ConfigError\n"
        "from pytest_vaurien.handlers import BaseHandler as B2, SocketView, ConnectionView\n"
        "assert BaseHandler is B2 and Proxy.__module__ == 'pytest_vaurien.engine.proxy'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
