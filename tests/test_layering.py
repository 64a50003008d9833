"""The import structure, read from the code: no cycles between files or between packages;
the core (phonewipe.erase) never imports the application layer, the certificates or a
plugin; certificates never import the application layer; a plugin never imports another."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"phonewipe": "phonewipe", "erase": "phonewipe.erase",
           "protocols": "phonewipe.protocols", "certificates": "phonewipe.certificates"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, except those under `if TYPE_CHECKING:` (types only)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The phonewipe modules ``name`` imports, anywhere in the file (lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
            if any(t not in known for t in targets):  # names from the module itself
                targets.append(base)
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    parts = module.split(".") + [""]
    if parts[1] == "protocols" and len(parts) > 2:
        return ".".join(parts[:3])  # each plugin is its own package
    return ".".join(parts[:2]) if parts[1] in ("erase", "certificates", "protocols") \
        else "phonewipe(app)"


def test_no_file_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_no_package_imports_itself_through_others() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph().items():
        packages[package_of(module)] |= {package_of(t) for t in targets} - {package_of(module)}
    assert cycles(packages) == []


def test_layers_point_down_only() -> None:
    for module, targets in graph().items():
        layer = package_of(module)
        for target in targets:
            to = package_of(target)
            if layer == "phonewipe.erase":
                assert to == "phonewipe.erase", f"the core {module} imports {target}"
            if layer == "phonewipe.certificates":
                assert to in ("phonewipe.erase", layer), f"{module} imports {target}"
            if layer.startswith("phonewipe.protocols."):
                assert to in ("phonewipe.erase", layer), f"plugin {module} imports {target}"
