"""``--add-noqa``: suppress the current findings in place, for adopting the linter on old code.

Appends ``# noqa: DTL00x`` to the line where each finding starts (merging with an existing
``# noqa: ...`` list); if that line is continued with a backslash, to the line where the
continuation ends (a comment after ``\\`` does not compile; the engine honours a noqa there).
A line that ends inside a multi-line string cannot take a comment; its findings are left as
they are and still reported.
"""

from __future__ import annotations

import io
import tokenize
from collections import defaultdict
from typing import Iterable

from .directives import NOQA, split_codes
from .engine import Diagnostic, decode_source
from .textlines import logical_end, physical_lines


def _lines_inside_strings(text: str) -> set[int]:
    """1-based lines whose end is inside a (multi-line) string token."""
    inside: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0], tok.end[0]))
            elif tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1) and tok.end[0] > tok.start[0]:
                inside.update(range(tok.start[0], tok.end[0]))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return inside


def add_noqa(path: str, diags: Iterable[Diagnostic]) -> int:
    """Rewrite ``path``; return how many findings got a directive."""
    diags = [d for d in diags if not d.code.startswith("DTL9")]
    if not diags:
        return 0
    with open(path, "rb") as fh:
        data = fh.read()
    text, encoding, err = decode_source(data)
    if text is None:
        return 0
    lines = physical_lines(text, keepends=True)
    by_line: dict[int, set[str]] = defaultdict(set)
    for d in diags:
        by_line[logical_end(lines, d.line)].add(d.code)
    blocked = _lines_inside_strings(text)
    added = 0
    for ln, codes in sorted(by_line.items()):
        if ln in blocked or not 1 <= ln <= len(lines):
            continue
        line = lines[ln - 1]
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        m = NOQA.search(body)
        if m and m.group("codes"):
            have = split_codes(m.group("codes"))
            merged = have + sorted(c for c in codes if c not in have)
            body = body[: m.start("codes")] + ", ".join(merged) + body[m.end("codes") :]
        else:
            body = body.rstrip() + "  # noqa: " + ", ".join(sorted(codes))
        lines[ln - 1] = body + ending
        added += len(codes)
    new = "".join(lines)
    if new != text:
        with open(path, "wb") as fh:
            fh.write(new.encode(encoding))
    return added
