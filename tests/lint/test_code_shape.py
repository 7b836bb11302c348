"""The linter's own code: short functions, no private names shared between modules, and
design citations that resolve (issue 14). Scoped to ``dualtype_lint/`` and ``docs/lint.md``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dualtype_lint"
MAX_BODY = 100


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_package_module(node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] == "dualtype_lint"


def long_functions(source: str) -> list[tuple[str, int]]:
    """Functions (and methods) whose body spans more than MAX_BODY lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.body[-1].end_lineno - node.body[0].lineno + 1
            if n > MAX_BODY:
                out.append((node.name, n))
    return out


def private_imports(source: str) -> list[tuple[int, str]]:
    """Private names taken from another module of the package: ``from .ops import _x`` and
    ``from . import ops as m`` ... ``m._x``."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_package_module(node):
            for a in node.names:
                if _private(a.name):
                    found.append((node.lineno, a.name))
                if node.module is None:  # `from . import expressions as _expressions`
                    module_aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "dualtype_lint" and a.asname:
                    module_aliases.add(a.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _private(node.attr)
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_the_checks_see_what_they_look_for():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY + 1))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_BODY + 1)]
    assert long_functions("def f():\n" + "\n".join(body.splitlines()[:MAX_BODY]) + "\n") == []
    src = "from .ops import _binop, names_in\nfrom . import maps as m\nimport os\nm._x(os._exit)\n"
    assert private_imports(src) == [(1, "_binop"), (4, "m._x")]
    assert private_imports("from os import _exit\nfrom .ops import binop\n") == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_body_over_100_lines(path):
    assert long_functions(path.read_text()) == [], f"{path}: split these into functions with one job each"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_of_another_module(path):
    assert private_imports(path.read_text()) == [], f"{path}: make shared names public"


CITATION = re.compile(r"(?:docs/)?design\.md\s*§\s*(\d+)|DESIGN\s*§\s*(\d+)")


def _design_sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    return set(re.findall(r"^#{1,3}\s*§(\d+)\b", text, re.MULTILINE))


def _citing_files() -> list[Path]:
    return [*_modules(), ROOT / "docs" / "lint.md"]


def test_design_citations_resolve():
    sections = _design_sections()
    assert {"1", "3", "4", "5"} <= sections  # the headings this test reads
    bad = []
    for path in _citing_files():
        text = path.read_text()
        for m in CITATION.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            if m.group(2) is not None:
                bad.append(f"{path.relative_to(ROOT)}:{line}: `{m.group(0)}` names no file: cite docs/design.md §n")
            elif m.group(1) not in sections:
                bad.append(f"{path.relative_to(ROOT)}:{line}: docs/design.md has no §{m.group(1)}")
    assert not bad, "\n".join(bad)
