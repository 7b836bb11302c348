"""Suppression comments, parsed in one place.

- ``# noqa`` (every code) or ``# noqa: DTL001, DTL002`` (those codes) on a line: the line's
  findings are not reported (flake8's syntax, so both tools agree);
- ``# dualtype-lint: skip-file`` or ``# dualtype-lint: noqa`` on a line of its own: the file
  is not checked; ``# dualtype-lint: noqa: CODES``: those codes are off for the file.

:mod:`dualtype_lint.engine` reads them, :mod:`dualtype_lint.noqa` (``--add-noqa``) writes them.
"""

from __future__ import annotations

import re

from .textlines import logical_end

# A comma- or space-separated list of rule codes: ``DTL001, DTL002``.
_CODE_LIST = r"[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*"

NOQA = re.compile(rf"#\s*noqa(?::\s*(?P<codes>{_CODE_LIST}))?", re.IGNORECASE)
FILE_DIRECTIVE = re.compile(
    rf"^[ \t]*#[ \t]*dualtype-lint:[ \t]*(?P<kind>skip-file|noqa)(?:[ \t]*:[ \t]*(?P<codes>{_CODE_LIST}))?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


def split_codes(codes: str) -> list[str]:
    """``"dtl001, DTL002"`` -> ``["DTL001", "DTL002"]`` (the ``codes`` group of a match)."""
    return [c.upper() for c in re.split(r"[\s,]+", codes) if c]


def noqa_codes(line_text: str) -> frozenset[str] | None:
    """None: no noqa; empty set: bare noqa (all codes); else the listed codes."""
    m = NOQA.search(line_text)
    if m is None:
        return None
    return frozenset(split_codes(m.group("codes") or ""))


def file_directive(text: str) -> tuple[bool, frozenset[str]]:
    """``(True, {})`` if the whole file is skipped, else ``(False, codes turned off for it)``."""
    skip_all = False
    codes: set[str] = set()
    for m in FILE_DIRECTIVE.finditer(text):
        if m.group("codes"):
            codes.update(split_codes(m.group("codes")))
        else:
            skip_all = True
    return skip_all, frozenset(codes)


def suppressed(lines: list[str], code: str, line: int, end_line: int) -> bool:
    """Is a finding of ``code`` spanning ``line``..``end_line`` (1-based) under a ``# noqa``?

    A line continued with a backslash cannot carry a comment: its noqa is where it ends."""
    for ln in {line, end_line, logical_end(lines, line), logical_end(lines, end_line)}:
        if 1 <= ln <= len(lines) and "noqa" in lines[ln - 1].lower():
            codes = noqa_codes(lines[ln - 1])
            if codes is not None and (not codes or code in codes):
                return True
    return False
