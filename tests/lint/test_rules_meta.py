"""Each rule is one documented class, and its documented examples behave as documented."""

from __future__ import annotations

import re
import textwrap

import pytest

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text
from dualtype_lint.rules import ALL_RULES, FLOW_CODES, RULES_BY_CODE


def _block(doc: str, label: str) -> str:
    """The indented code block that follows ``label::`` in a docstring."""
    lines = textwrap.dedent("    " + doc.strip()).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"{label}::")
    body = []
    for ln in lines[start + 1 :]:
        if ln.strip() and not ln.startswith(" "):
            break
        body.append(ln)
    return textwrap.dedent("\n".join(body)).strip() + "\n"


def test_codes_names_unique_and_well_formed():
    codes = [r.code for r in ALL_RULES]
    names = [r.name for r in ALL_RULES]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    for r in ALL_RULES:
        assert re.fullmatch(r"DTL\d{3}", r.code)
        assert re.fullmatch(r"[a-z0-9-]+", r.name)
        assert r.summary and r.__doc__ and r.__doc__.lstrip().startswith(f"{r.code} {r.name}")


@pytest.mark.parametrize("code", sorted(RULES_BY_CODE))
def test_docstring_has_bad_and_good_examples(code):
    doc = RULES_BY_CODE[code].__doc__ or ""
    assert _block(doc, "Bad").strip() and _block(doc, "Good").strip()


@pytest.mark.parametrize("code", sorted(FLOW_CODES | {"DTL900"}))
def test_bad_example_is_flagged_and_good_example_is_not(code):
    doc = RULES_BY_CODE[code].__doc__ or ""
    settings = Settings(prefilter=False)
    bad = lint_text(_block(doc, "Bad"), "bad.py", settings)
    good = lint_text(_block(doc, "Good"), "good.py", settings)
    assert code in {d.code for d in bad.diagnostics}, bad.diagnostics
    assert good.diagnostics == [], good.diagnostics


def test_one_class_per_rule_module():
    modules = {r.__module__ for r in ALL_RULES if r.code in FLOW_CODES}
    assert len(modules) == len(FLOW_CODES)


def test_user_docs_cover_every_rule_and_option():
    from pathlib import Path

    from dualtype_lint.cli import build_parser

    docs = (Path(__file__).resolve().parents[2] / "docs" / "lint.md").read_text()
    for r in ALL_RULES:
        assert f"### {r.code}" in docs and r.name in docs
    for action in build_parser()._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--version"):
                assert f"`{opt}" in docs, opt
