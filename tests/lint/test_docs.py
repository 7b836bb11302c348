"""docs/lint.md's rule reference is generated from the rule docstrings and must be current."""

from __future__ import annotations

import pytest

from dualtype_lint import docs
from dualtype_lint.rules import RULES_BY_CODE, Rule


def test_docs_lint_md_is_current():
    text = docs.DEFAULT_PATH.read_text(encoding="utf-8")
    assert docs.updated(text) == text, "docs/lint.md is stale: run `python -m dualtype_lint.docs`"


class _Toy(Rule):
    """DTL999 toy-rule: ``p -= g`` is written
    over two lines.

    Bad::

        p -= g

    Good::

        (a crash)

    Fix: none.
    """

    code = "DTL999"
    name = "toy-rule"
    summary = "a toy"


def test_a_docstring_becomes_markdown():
    assert docs.rule_markdown(_Toy) == (
        "### DTL999\n\n`toy-rule`: `p -= g` is written\nover two lines.\n\n"
        "Bad:\n\n```python\np -= g\n```\n\nGood:\n\n```text\n(a crash)\n```\n\nFix: none.\n"
    )


def test_a_stale_file_is_reported_and_rewritten(tmp_path, capsys):
    stale = tmp_path / "lint.md"
    stale.write_text(f"# intro\n\n{docs.BEGIN}\nold text\n{docs.END}\n\n## after\n", encoding="utf-8")
    assert docs.main([str(stale), "--check"]) == 1
    assert "not current" in capsys.readouterr().err
    assert "old text" in stale.read_text()  # --check writes nothing
    assert docs.main([str(stale)]) == 0
    new = stale.read_text()
    assert "old text" not in new and new.startswith("# intro\n") and new.endswith(f"{docs.END}\n\n## after\n")
    for code in RULES_BY_CODE:
        assert f"### {code}\n" in new
    assert docs.main([str(stale), "--check"]) == 0


def test_missing_markers_are_an_error(tmp_path, capsys):
    f = tmp_path / "lint.md"
    f.write_text("# no markers\n", encoding="utf-8")
    assert docs.main([str(f)]) == 2
    assert "markers" in capsys.readouterr().err


def test_a_docstring_without_its_code_is_refused():
    class Bad(_Toy):
        """toy-rule without its code."""

    with pytest.raises(ValueError, match="must start with 'DTL999 toy-rule'"):
        docs.rule_markdown(Bad)
