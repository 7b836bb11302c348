"""Jupyter notebooks: lint the code cells of an ``.ipynb`` file.

The code cells are joined into one module (names defined in one cell are seen in the next, as
when the notebook runs top to bottom); IPython magics and shell escapes (``%time``, ``!pip``,
``x?``) become ``pass`` so the lines stay where they were. Findings are reported as
``path:cell N:line:col``, N counting every cell of the notebook from 1 as Jupyter shows them.
Fixes are not applied to notebooks.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings
    from .engine import FileResult

_MAGIC = re.compile(r"^\s*(?:[%!]|\?)|^[^#'\"]*\?\s*$")


def code_of(data: bytes) -> tuple[str, list[tuple[int, int]]] | str:
    """The joined code cells and, per joined line, (cell number, line in cell); or an error."""
    try:
        nb = json.loads(data.decode("utf-8-sig"))
        cells = nb["cells"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return f"not a notebook: {type(exc).__name__}: {exc}"
    if not isinstance(cells, list):
        return "not a notebook: `cells` is not a list"
    lines: list[str] = []
    where: list[tuple[int, int]] = []
    for n, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        text = "".join(src) if isinstance(src, list) else str(src)
        for i, line in enumerate(text.splitlines(), 1):
            if _MAGIC.match(line):
                indent = line[: len(line) - len(line.lstrip())]
                line = indent + "pass"
            lines.append(line)
            where.append((n, i))
        lines.append("")  # a cell ends its last statement
        where.append((n, len(text.splitlines()) + 1))
    return "\n".join(lines) + "\n", where


def lint_notebook(data: bytes, path: str, settings: "Settings", display: str) -> "FileResult":
    from .engine import Diagnostic, FileResult, lint_text
    from .rules import DECODE_ERROR

    got = code_of(data)
    if isinstance(got, str):
        res = FileResult(display)
        if DECODE_ERROR in settings.codes_for(path):
            res.diagnostics.append(Diagnostic(display, DECODE_ERROR, got, 1, 1, 1, 1))
        return res
    text, where = got
    quiet = replace(settings, fix=False, diff=False) if (settings.fix or settings.diff) else settings
    res = lint_text(text, path, quiet, display)
    for k, d in enumerate(res.diagnostics):
        if 1 <= d.line <= len(where):
            cell, line = where[d.line - 1]
            end = where[d.end_line - 1][1] if 1 <= d.end_line <= len(where) else line
            res.diagnostics[k] = replace(d, line=line, end_line=end, cell=cell, fixable=False)
    res.diagnostics.sort(key=lambda d: d.sort_key())
    return res
