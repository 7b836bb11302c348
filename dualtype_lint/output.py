"""Output formats. Every format reports the same 1-based line and column (characters)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import PurePath
from typing import Sequence, TextIO

from . import __version__
from .engine import Diagnostic
from .rules import ALL_RULES, RULES_BY_CODE

FORMATS = ("text", "json", "github", "sarif")
DOCS_URL = "https://github.com/dualtype/dualtype/blob/main/docs/lint.md"


def _uri(path: str) -> str:
    p = PurePath(path)
    return p.as_uri() if p.is_absolute() else p.as_posix()


def write_text(diags: Sequence[Diagnostic], out: TextIO, show_fixes: bool) -> None:
    for d in diags:
        mark = "[*] " if (d.fixable and show_fixes) else ""
        where = f"cell {d.cell}:{d.line}" if d.cell is not None else d.line
        out.write(f"{d.path}:{where}:{d.col}: {d.code} {mark}{d.message}\n")


def to_json(diags: Sequence[Diagnostic]) -> list[dict]:
    return [
        {
            "code": d.code,
            "name": d.name,
            "message": d.message,
            "filename": d.path,
            "location": {"row": d.line, "column": d.col, **({"cell": d.cell} if d.cell is not None else {})},
            "end_location": {"row": d.end_line, "column": d.end_col},
            "fix": (
                {"applicability": "unsafe", "message": "Wrap the raw gradient in `dualize(...)`"}
                if d.fixable
                else None
            ),
            "url": f"{DOCS_URL}#{d.code.lower()}",
        }
        for d in diags
    ]


def _gh_escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_escape_prop(s: str) -> str:
    return _gh_escape_data(s).replace(":", "%3A").replace(",", "%2C")


def write_github(diags: Sequence[Diagnostic], out: TextIO) -> None:
    for d in diags:
        props = ",".join(
            (
                f"title={_gh_escape_prop(f'dualtype-lint ({d.code})')}",
                f"file={_gh_escape_prop(d.path)}",
                f"line={d.line}",
                f"col={d.col}",
                f"endLine={d.end_line}",
                f"endColumn={d.end_col}",
            )
        )
        out.write(f"::error {props}::{_gh_escape_data(f'{d.path}:{d.line}:{d.col}: {d.code} {d.message}')}\n")


def to_sarif(diags: Sequence[Diagnostic]) -> dict:
    index = {r.code: i for i, r in enumerate(ALL_RULES)}
    rules = []
    for r in ALL_RULES:
        doc = " ".join((r.__doc__ or "").split())
        rules.append(
            {
                "id": r.code,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": doc},
                "helpUri": f"{DOCS_URL}#{r.code.lower()}",
                "defaultConfiguration": {"level": "error"},
            }
        )
    results = []
    for d in diags:
        results.append(
            {
                "ruleId": d.code,
                "ruleIndex": index.get(d.code, -1),
                "level": "error",
                "message": {"text": d.message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(d.path)},
                            "region": {
                                "startLine": d.line,
                                "startColumn": d.col,
                                "endLine": d.end_line,
                                "endColumn": d.end_col,
                            },
                        }
                    }
                ],
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dualtype-lint",
                        "version": __version__,
                        "informationUri": DOCS_URL,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def write(diags: Sequence[Diagnostic], fmt: str, out: TextIO, show_fixes: bool = False) -> None:
    if fmt == "text":
        write_text(diags, out, show_fixes)
    elif fmt == "json":
        json.dump(to_json(diags), out, indent=2)
        out.write("\n")
    elif fmt == "github":
        write_github(diags, out)
    elif fmt == "sarif":
        json.dump(to_sarif(diags), out, indent=2)
        out.write("\n")
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(fmt)


def statistics(diags: Sequence[Diagnostic], fmt: str, out: TextIO, show_fixes: bool) -> None:
    counts = Counter(d.code for d in diags)
    fixable = Counter(d.code for d in diags if d.fixable)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if fmt == "json":
        json.dump(
            [
                {
                    "code": c,
                    "name": RULES_BY_CODE[c].name if c in RULES_BY_CODE else c,
                    "count": n,
                    "fixable": fixable[c] > 0,
                }
                for c, n in rows
            ],
            out,
            indent=2,
        )
        out.write("\n")
        return
    width = max((len(str(n)) for _, n in rows), default=1)
    for c, n in rows:
        name = RULES_BY_CODE[c].name if c in RULES_BY_CODE else c
        mark = "[*] " if (fixable[c] and show_fixes) else "    " if show_fixes else ""
        out.write(f"{n:>{width}}\t{c}\t{mark}{name}\n")
