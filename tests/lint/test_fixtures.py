"""Fixture pairs: ``fixtures/<case>/input.py`` and the expected findings ``expected.txt``.

``expected.txt`` lists ``line:col CODE`` (1-based), one per line. Every line of an input that
carries a ``# flagged`` comment must be expected, and no other line: the fixtures document the
not-flagged cases next to the flagged ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_path, lint_text

FIXTURES = Path(__file__).parent / "fixtures"
# A fixture that must not parse is stored as input.txt, so that no broken .py file sits in the
# repository for other tools (compileall, formatters) to trip over.
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "input.py").is_file() or (p / "input.txt").is_file())


def source(case: str) -> Path:
    p = FIXTURES / case / "input.py"
    return p if p.is_file() else FIXTURES / case / "input.txt"

DUALIZERS = {"dualizers": ("zeropower_via_newtonschulz5", "mylib.ops.whiten")}


def _expected(case: str) -> list[str]:
    text = (FIXTURES / case / "expected.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _found(case: str) -> list[str]:
    settings = Settings(dualizers=DUALIZERS.get(case, ()))
    res = lint_text(source(case).read_text(), "input.py", settings)
    assert not res.internal_error, res.diagnostics
    return [f"{d.line}:{d.col} {d.code}" for d in res.diagnostics]


def test_every_rule_has_a_fixture():
    assert {"dtl001", "dtl002", "dtl003", "dtl004", "dtl005", "dtl006", "not_flagged", "dataflow"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_fixture(case: str) -> None:
    assert _found(case) == _expected(case)


@pytest.mark.parametrize("case", [c for c in CASES if c != "syntax"])
def test_markers_match_expectations(case: str) -> None:
    lines = source(case).read_text().splitlines()
    marked = {i for i, ln in enumerate(lines, 1) if "# flagged" in ln or "still flagged" in ln}
    expected = {int(e.split(":")[0]) for e in _expected(case)}
    assert marked == expected


@pytest.mark.parametrize("case", ["dtl001", "dtl002", "dtl003", "dtl004", "dtl005", "dtl006"])
def test_rule_fixture_mostly_its_own_code(case: str) -> None:
    codes = {e.split()[1] for e in _expected(case)}
    assert codes == {case.upper()}


def test_not_flagged_fixture_is_clean_even_without_prefilter() -> None:
    settings = Settings(prefilter=False)
    res = lint_path(str(FIXTURES / "not_flagged" / "input.py"), settings)
    assert res.parsed and res.diagnostics == []


def test_dualizers_are_needed() -> None:
    """Without the configured dualizers the same file has one more finding (line 14 calls a
    function named like an orthogonalizer, which is recognised without configuration)."""
    res = lint_path(str(FIXTURES / "dualizers" / "input.py"), Settings())
    assert sorted(d.line for d in res.diagnostics) == [15, 16, 17]


def test_methods_inherited_from_a_base_class_in_another_file() -> None:
    """``self.denominator(v, eps)`` defined on a base class two levels up, in another file:
    its summary (√v + ε) makes ``addcdiv_(m, de_nom)`` Adam's update (DTL006); a
    ``@staticmethod`` with ``*tensors`` passes the gradient through in position."""
    res = lint_path(str(FIXTURES / "inherited" / "pkg" / "adam.py"), Settings())
    assert [(d.line, d.code) for d in res.diagnostics] == [(19, "DTL006"), (29, "DTL002"), (30, "DTL002")]
