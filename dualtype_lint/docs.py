"""The rule reference of ``docs/lint.md``, generated from the rule classes' docstrings.

The docstrings are the single source (``--explain`` prints them too). Run
``python -m dualtype_lint.docs`` after editing one to rewrite the generated part of
``docs/lint.md`` (between the two marker comments); ``--check`` only reports whether it is
current (exit 1 if not), as ``tests/lint/test_docs.py`` does.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from .rules import ALL_RULES, Rule

BEGIN = "<!-- BEGIN rules: generated from the rule docstrings by `python -m dualtype_lint.docs`; edit those -->"
END = "<!-- END rules -->"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "lint.md"
_INLINE = re.compile(r"``(.+?)``")


def _fence(block: list[str]) -> list[str]:
    """An indented docstring block as a fenced Markdown block (python if it parses)."""
    code = textwrap.dedent("\n".join(block)).strip("\n")
    try:
        ast.parse(code)
        lang = "python"
    except SyntaxError:
        lang = "text"
    return [f"```{lang}", *code.splitlines(), "```"]


def rule_markdown(rule: type[Rule]) -> str:
    """One rule's section: its docstring in Markdown (``x`` as `x`, ``Label::`` blocks fenced)."""
    lines = textwrap.dedent("    " + (rule.__doc__ or "").strip()).splitlines()
    head = f"{rule.code} {rule.name}"
    if not lines or not lines[0].startswith(head):
        raise ValueError(f"the docstring of {rule.__name__} must start with {head!r}")
    lines[0] = f"``{rule.name}``" + lines[0][len(head):]
    out = [f"### {rule.code}", ""]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.endswith("::") and not line.startswith(" "):
            block: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out += [_INLINE.sub(r"`\1`", line[:-1]), "", *_fence(block), ""]
            continue
        out.append(_INLINE.sub(r"`\1`", line))
        i += 1
    return "\n".join(out).rstrip() + "\n"


def rules_markdown() -> str:
    """The summary table and every rule's section, in code order."""
    table = ["| code | name | what | fix |", "|---|---|---|---|"]
    for r in ALL_RULES:
        table.append(f"| {r.code} | {r.name} | {r.summary} | {'unsafe' if r.fixable else '—'} |")
    return "\n".join(table) + "\n\n" + "\n".join(rule_markdown(r) for r in ALL_RULES)


def updated(doc: str) -> str:
    """``doc`` with the text between the markers replaced by :func:`rules_markdown`."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start == -1 or end < start:
        raise ValueError(f"the markers are missing or out of order: put {BEGIN!r} and {END!r} around the rules")
    return doc[: start + len(BEGIN)] + "\n\n" + rules_markdown() + "\n" + doc[end:]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dualtype_lint.docs", description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="the Markdown file (default: docs/lint.md)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the file is not current")
    args = p.parse_args(argv)
    path = Path(args.path)
    try:
        doc = path.read_text(encoding="utf-8")
        new = updated(doc)
    except (OSError, ValueError) as exc:
        print(f"dualtype_lint.docs: error: {path}: {exc}", file=sys.stderr)
        return 2
    if new == doc:
        return 0
    if args.check:
        print(f"{path} is not current: run `python -m dualtype_lint.docs`", file=sys.stderr)
        return 1
    path.write_text(new, encoding="utf-8")
    print(f"rewrote the rule reference in {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
