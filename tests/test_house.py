"""The library's modules import each other one way: no circle, counting imports inside functions and
the package faces (``__init__.py``) that importing a module runs first."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "lib" / "universal"


def module_name(path: Path, root: Path = LIBRARY) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], root: Path = LIBRARY) -> set[str]:
    """The library modules ``path`` imports anywhere in it (functions included), and the package faces
    that importing each of them runs first, except the faces of ``path``'s own packages, which are
    already running (a face named in the import itself, ``from universal import X``, counts)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join(part for part in (*kept, base) if part)
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined by the module or face ``base`` itself
                found.add(base)
    own = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 1)}
    edges = set(found)
    for target in found:
        parts = target.split(".")
        edges.update(".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) not in own)
    return {edge for edge in edges if edge in modules and edge != name}


def import_graph(root: Path = LIBRARY) -> dict[str, set[str]]:
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    return {name: imported_modules(path, set(paths), root) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as a list of modules (first = last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_library_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_through_a_package_face_or_a_function_is_found(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from pkg.sub.deep import thing\n")
    (root / "sub" / "deep.py").write_text("from pkg import VERSION, low\nthing = 1\n")
    (root / "low.py").write_text("def late():\n    from .sub import other\n")
    (root / "sub" / "other.py").write_text("from . import deep\n")  # its own package runs already: no edge
    graph = import_graph(root)
    assert graph["pkg.low"] == {"pkg.sub", "pkg.sub.other"}  # the face that importing pkg.sub.other runs
    assert graph["pkg.sub.other"] == {"pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg", "pkg.low"}  # VERSION: a name the face defines
    assert find_cycle(graph) == ["pkg.low", "pkg.sub", "pkg.sub.deep", "pkg.low"]
    (root / "low.py").write_text("")
    assert find_cycle(import_graph(root)) is None
