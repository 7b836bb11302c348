"""The flake8 plugin class, driven as flake8 drives it (flake8 itself is optional)."""

from __future__ import annotations

import ast
from pathlib import Path

from dualtype_lint.config import load_toml
from dualtype_lint.flake8_plugin import DualtypeLintChecker

SRC = "import torch\n\n\ndef f(w, lr):\n    w -= lr * w.grad\n    w.add_(w.grad)  # noqa: DTL002\n"


def test_plugin_yields_flake8_tuples():
    lines = SRC.splitlines(keepends=True)
    checker = DualtypeLintChecker(tree=ast.parse(SRC), lines=lines, filename="x.py")
    results = list(checker.run())
    # flake8 wants 0-based columns; it prints them +1, matching dualtype-lint's 5:5
    assert results[0][:3] == (5, 4, results[0][2]) and results[0][2].startswith("DTL001 ")
    assert all(r[3] is DualtypeLintChecker for r in results)
    # our own noqa pass also applies; flake8 would suppress it anyway
    assert [r[2][:6] for r in results] == ["DTL001"]


def test_entry_point_is_declared():
    data = load_toml(Path(__file__).resolve().parents[2] / "pyproject.toml")
    eps = data["project"]["entry-points"]["flake8.extension"]
    assert eps == {"DTL": "dualtype_lint.flake8_plugin:DualtypeLintChecker"}
