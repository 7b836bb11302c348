"""Lint one file: read, decode, pre-filter, parse, analyze, position, suppress, fix.

Everything that can go wrong with a single file becomes a diagnostic on that file
(DTL900 parse failure, DTL901 unreadable or undecodable, DTL902 internal error); nothing
raises out of :func:`lint_path` or :func:`lint_text`.
"""

from __future__ import annotations

import difflib
import errno
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from typing import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .config import Settings
from .limits import OverBudget, check_structure, is_heavy, run_bounded
from .dataflow import Analyzer, Dualizers, Finding
from .names import is_grad_name
from .positions import node_ranges
from .rules import DECODE_ERROR, FLOW_CODES, INTERNAL_ERROR, RULES_BY_CODE, SYNTAX_ERROR
from .textlines import logical_end, physical_lines

# Every finding needs a gradient source, and every source is spelled with an identifier that
# looks like a gradient (``.grad``, ``grads``, ``device_grads``, ``d_p``, ``autograd.grad``,
# ``torch.func.grad``); ``no_grad``, ``requires_grad``, ``zero_grad`` are not sources. A file
# without one cannot produce a finding, so it costs only a read, a decode and one regex scan.
# The match may only start at the start of a word: from every position inside a long word
# (a 1 MB string literal, a 100k-digit number) ``\w*grad`` would rescan the rest of it.
_GRAD_TOKEN = re.compile(r"(?<!\w)(?:\w*grad\w*|d_p\w*)")


def might_have_findings(text: str) -> bool:
    if "grad" not in text and "d_p" not in text:
        return False
    for token in set(_GRAD_TOKEN.findall(text)):
        if "autograd" in token or is_grad_name(token):
            return True
    return False

_NOQA = re.compile(
    r"#\s*noqa(?::\s*(?P<codes>[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*))?", re.IGNORECASE
)
_FILE_DIRECTIVE = re.compile(
    r"^[ \t]*#[ \t]*dualtype-lint:[ \t]*(?P<kind>skip-file|noqa)"
    r"(?:[ \t]*:[ \t]*(?P<codes>[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*))?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class Diagnostic:
    path: str
    code: str
    message: str
    line: int  # 1-based
    col: int  # 1-based, in characters
    end_line: int
    end_col: int  # 1-based, exclusive
    fixable: bool = False  # an (unsafe) fix exists
    cell: int | None = None  # notebooks: the cell, and line is the line in that cell

    @property
    def name(self) -> str:
        r = RULES_BY_CODE.get(self.code)
        return r.name if r else self.code

    def sort_key(self) -> tuple:
        return (self.path, self.cell or 0, self.line, self.col, self.code)


@dataclass
class FileResult:
    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lines: int = 0
    parsed: bool = False
    prefiltered: bool = False  # skipped by the text pre-filter (read and decoded only)
    fixed: int = 0  # findings removed by applied fixes
    stdout_source: bytes | None = None  # --fix on stdin: the fixed source (or the input unchanged)
    diff: str | None = None  # unified diff of the (would-be) fix
    internal_error: bool = False


def decode_source(data: bytes) -> tuple[str | None, str, tuple[int, int, str] | None]:
    """Decode per PEP 263 (UTF-8 unless a coding line says otherwise).

    Returns ``(text, encoding, None)`` or ``(None, encoding, (line, col, message))``.
    """
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        # no usable coding line and the first lines are not UTF-8: point at the bad byte
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            encoding = "utf-8"
        else:
            return None, "utf-8", (1, 1, f"cannot decode: {exc}")
    try:
        return data.decode(encoding), encoding, None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, encoding, (line, col, f"not valid {encoding}: byte {data[exc.start]:#04x} at offset {exc.start}")
    except LookupError:
        return None, encoding, (1, 1, f"unknown encoding {encoding!r}")


def _file_directive(text: str) -> tuple[bool, frozenset[str]]:
    """``# dualtype-lint: skip-file`` / ``noqa`` (whole file) or ``noqa: CODES`` (those codes)."""
    skip_all = False
    codes: set[str] = set()
    for m in _FILE_DIRECTIVE.finditer(text):
        if m.group("codes"):
            codes.update(c.upper() for c in re.split(r"[\s,]+", m.group("codes")) if c)
        else:
            skip_all = True
    return skip_all, frozenset(codes)


def _noqa_codes(line_text: str) -> frozenset[str] | None:
    """None: no noqa; empty set: bare noqa (all codes); else the listed codes."""
    m = _NOQA.search(line_text)
    if m is None:
        return None
    if not m.group("codes"):
        return frozenset()
    return frozenset(c.upper() for c in re.split(r"[\s,]+", m.group("codes")) if c)


def _suppressed(lines: list[str], d: Diagnostic) -> bool:
    # a line continued with a backslash cannot carry a comment: its noqa is where it ends
    for ln in {d.line, d.end_line, logical_end(lines, d.line), logical_end(lines, d.end_line)}:
        if 1 <= ln <= len(lines) and "noqa" in lines[ln - 1].lower():
            codes = _noqa_codes(lines[ln - 1])
            if codes is not None and (not codes or d.code in codes):
                return True
    return False


RECURSION_LIMIT = 20000  # the analyzer recurses over expressions (in a big-stack thread)


def _syntax_error_location(text: str, exc: cst.ParserSyntaxError) -> tuple[int, int, str]:
    """libcst's native parser reports where it gave up; CPython's parser says where the error
    is. Ask CPython (only on this error path), and fall back to libcst."""
    import ast

    try:
        ast.parse(text)
    except SyntaxError as se:
        if se.lineno:
            return se.lineno, max(1, se.offset or 1), se.msg
    except (ValueError, RecursionError, MemoryError):
        pass
    return exc.raw_line, exc.raw_column + 1, " ".join(str(exc.message).split())


def _keep_unparsed(text: str, unchanged: str, new_text: str) -> str | None:
    """libcst's code generation drops a leading form feed and a CR-only file's last ``\\r``
    (its round trip is not exact there): put back what the unchanged module lost around its
    code. None (no fix) if the loss is elsewhere: a fix must change nothing but the fix."""
    if unchanged == text:
        return new_text
    at = text.find(unchanged)
    if at == -1:
        return None
    return text[:at] + new_text + text[at + len(unchanged) :]


def lint_path(path: str, settings: Settings, display: str | None = None) -> FileResult:
    display = display or path
    try:
        if path == "-":
            if sys.stdin is None:  # `dualtype-lint - <&-`
                raise OSError(errno.EBADF, "standard input is closed")
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        res = FileResult(display)
        res.diagnostics.append(
            Diagnostic(display, DECODE_ERROR, f"cannot read file: {exc.strerror or exc}", 1, 1, 1, 1)
        )
        return res
    if path.endswith(".ipynb"):
        from .notebook import lint_notebook

        return lint_notebook(data, path, settings, display)
    return lint_bytes(data, path, settings, display, write_back=(path != "-"))


def lint_bytes(
    data: bytes, path: str, settings: Settings, display: str | None = None, write_back: bool = False
) -> FileResult:
    display = display or path
    text, encoding, err = decode_source(data)
    if text is None:
        assert err is not None
        res = FileResult(display, lines=data.count(b"\n"))
        codes = settings.codes_for(path)
        if DECODE_ERROR in codes:
            ln, col, msg = err
            res.diagnostics.append(Diagnostic(display, DECODE_ERROR, msg, ln, col, ln, col))
        return res
    res = lint_text(text, path, settings, display)
    if settings.fix and path == "-":  # as ruff: the source goes to stdout, fixed or not
        new = res.__dict__.get("_new_text")
        res.stdout_source = data if new is None or res.internal_error else new.encode(encoding)
    if res.diff is not None and settings.fix and write_back and not res.internal_error:
        new_text = res.__dict__.pop("_new_text")
        try:
            with open(path, "wb") as fh:
                fh.write(new_text.encode(encoding))
        except (OSError, UnicodeEncodeError) as exc:
            res.diagnostics.append(
                Diagnostic(display, INTERNAL_ERROR, f"could not write the fix: {exc}", 1, 1, 1, 1)
            )
            res.internal_error = True
    res.__dict__.pop("_new_text", None)
    return res


def lint_text(text: str, path: str, settings: Settings, display: str | None = None) -> FileResult:
    display = display or path
    res = FileResult(display, lines=text.count("\n") + (0 if text.endswith("\n") or not text else 1))
    try:
        _lint_text(text, path, settings, res)
    except OverBudget:
        res.internal_error = True
        msg = f"gave up after {settings.timeout:g} s (the per-file time budget): not checked"
        res.diagnostics = [Diagnostic(display, INTERNAL_ERROR, msg, 1, 1, 1, 1)]
    except Exception as exc:  # a bug in the linter: report it on the file, keep going
        res.internal_error = True
        res.diagnostics.append(
            Diagnostic(display, INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}", 1, 1, 1, 1)
        )
    return res


def _lint_text(text: str, path: str, settings: Settings, res: FileResult) -> None:
    codes = settings.codes_for(path)
    skip_all, file_ignored = ("dualtype-lint" in text and _file_directive(text)) or (False, frozenset())
    if skip_all:
        return
    codes = codes - file_ignored
    flow = codes & FLOW_CODES
    if settings.prefilter and (not flow or not might_have_findings(text)):
        res.prefiltered = True
        return
    if not flow and SYNTAX_ERROR not in codes:
        res.prefiltered = True
        return

    kind, loc, depth = check_structure(text)  # CPython first: it fails cleanly where libcst crashes
    if loc is not None:
        if SYNTAX_ERROR in codes:
            ln, col, msg = loc
            msg = msg if msg.startswith("could not") else f"syntax error: {msg}"
            res.diagnostics.append(Diagnostic(res.path, SYNTAX_ERROR, msg, ln, col, ln, col))
        return
    heavy = is_heavy(len(text), depth)  # then parse where it can be killed at the budget
    done = run_bounded(lambda: _parse_and_analyze(text, path, settings, res, codes), settings.timeout, heavy)
    if done is not res:  # it came back from a child process
        res.__dict__.update(done.__dict__)


def _parse_and_analyze(text: str, path: str, settings: Settings, res: FileResult, codes: frozenset[str]) -> FileResult:
    flow = codes & FLOW_CODES
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        if SYNTAX_ERROR in codes:
            ln, col, msg = _syntax_error_location(text, exc)
            res.diagnostics.append(Diagnostic(res.path, SYNTAX_ERROR, f"syntax error: {msg}", ln, col, ln, col))
        return res
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # nesting limits, NUL bytes
        if SYNTAX_ERROR in codes:
            msg = f"could not parse: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            res.diagnostics.append(Diagnostic(res.path, SYNTAX_ERROR, msg, 1, 1, 1, 1))
        return res
    res.parsed = True
    if not flow:
        return res

    rules = [RULES_BY_CODE[c]() for c in sorted(flow)]
    analyzer = Analyzer(module, rules, Dualizers(settings.dualizers), path)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, RECURSION_LIMIT))
    try:
        findings = analyzer.run()
        if not findings:
            return res
        ranges = node_ranges(module, [f.node for f in findings.values()])
        if len(ranges) < len(findings):  # not recorded by the lean pass: ask libcst
            positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
            for f in findings.values():
                r = positions[f.node]
                ranges[id(f.node)] = ((r.start.line, r.start.column), (r.end.line, r.end.column))
    except RecursionError:
        if SYNTAX_ERROR in codes:
            msg = "could not analyze: the code is nested too deeply (e.g. a very long operator chain)"
            res.diagnostics.append(Diagnostic(res.path, SYNTAX_ERROR, msg, 1, 1, 1, 1))
        return res
    finally:
        sys.setrecursionlimit(old_limit)

    lines = physical_lines(text)
    kept: list[tuple[Diagnostic, Finding]] = []
    for f in findings.values():
        (ln, col), (end_ln, end_col) = ranges[id(f.node)]
        d = Diagnostic(
            res.path, f.code, f.message, ln, col + 1, end_ln, end_col + 1, fixable=f.fix_leaves is not None
        )
        if not _suppressed(lines, d):
            kept.append((d, f))
    kept.sort(key=lambda df: df[0].sort_key())
    res.diagnostics.extend(d for d, _ in kept)

    if (settings.fix or settings.diff) and settings.unsafe_fixes:
        from .fix import apply_fixes

        leaves = [leaf for d, f in kept if f.fix_leaves for leaf in f.fix_leaves]
        if leaves:
            new_text = _keep_unparsed(text, module.code, apply_fixes(module, leaves, analyzer.imports))
            if new_text is not None and new_text != text:
                res.diff = "".join(
                    difflib.unified_diff(
                        text.splitlines(keepends=True),
                        new_text.splitlines(keepends=True),
                        fromfile=f"a/{res.path}",
                        tofile=f"b/{res.path}",
                    )
                )
                sub = Settings(**{**settings.__dict__, "fix": False, "diff": False})
                after = lint_text(new_text, path, sub, res.path)
                res.fixed = max(0, len(res.diagnostics) - len(after.diagnostics))
                if settings.fix:
                    res.diagnostics = after.diagnostics
                    res.__dict__["_new_text"] = new_text
    return res
