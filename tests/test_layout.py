"""The shape of the dualtype package, read from its source (nothing is imported):

- no module uses another module's private name (``from m import _x``, ``m._x``);
- the imports between dualtype modules have no cycle (imports inside functions count too:
  a deferred import must not hide a cycle);
- no function body is longer than 100 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "dualtype"
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(ROOT.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if module in MODULES and _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _is_package(module: str) -> bool:
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _imports(module: str, tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """(imported dualtype module, name taken from it or None, line) for each import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "dualtype"]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] != "dualtype":
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                found.append((sub, None, node.lineno) if sub in MODULES else (source, a.name, node.lineno))
    return found


def _module_aliases(module: str, tree: ast.Module) -> dict[str, str]:
    """Local names bound to dualtype modules (``from dualtype import norms as _norms``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    return aliases


def test_the_walk_sees_the_package():
    assert {"dualtype", "dualtype.tensor", "dualtype.optim", "dualtype.modules.base"} <= set(MODULES)


def test_no_module_uses_another_modules_private_names():
    found = []
    for module, tree in MODULES.items():
        for source, name, line in _imports(module, tree):
            if name is not None and _private(name) and source != module:
                found.append(f"{module}:{line} imports {source}.{name}")
        aliases = _module_aliases(module, tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)):
                found.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not found, "\n".join(found)


def test_no_import_cycles_between_dualtype_modules():
    graph = {m: sorted({s for s, _, _ in _imports(m, t) if s in MODULES and s != m}) for m, t in MODULES.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def _functions():
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield module, node


def test_no_function_is_longer_than_100_lines():
    long = [f"{m}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for m, f in _functions()
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("source, expected", [
    ("from dualtype.tensor import _tag\n", "imports dualtype.tensor._tag"),
    ("from dualtype import tensor\ntensor._tag(1)\n", "uses dualtype.tensor._tag"),
])
def test_the_private_name_check_catches(source, expected, monkeypatch):
    monkeypatch.setitem(MODULES, "dualtype.probe", ast.parse(source))
    with pytest.raises(AssertionError, match=expected.replace(".", r"\.")):
        test_no_module_uses_another_modules_private_names()


def test_the_cycle_check_catches_a_deferred_import(monkeypatch):
    monkeypatch.setitem(MODULES, "dualtype.errors", ast.parse("def f():\n    from dualtype import norms\n"))
    with pytest.raises(AssertionError, match="dualtype.errors -> dualtype.norms"):
        test_no_import_cycles_between_dualtype_modules()


@pytest.mark.parametrize("package", ["dualtype", "dualtype.kernels", "dualtype.modules", "dualtype.distributed"])
def test_each_package_exports_public_names_that_exist(package):
    import importlib

    mod = importlib.import_module(package)
    assert not [n for n in mod.__all__ if n.startswith("_")]
    assert not [n for n in mod.__all__ if not hasattr(mod, n)]
    assert len(mod.__all__) == len(set(mod.__all__))
