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
from dataclasses import dataclass, field, replace
from typing import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .config import Settings
from .limits import OverBudget, check_structure, gc_paused, is_heavy, light_depth, run_bounded
from .dataflow import Analyzer, Dualizers, Finding
from .directives import file_directive, suppressed
from .names import is_grad_name
from .nesting import depth_bound
from .positions import node_ranges
from .rules import DECODE_ERROR, FLOW_CODES, INTERNAL_ERROR, RULES_BY_CODE, SYNTAX_ERROR
from .textlines import physical_lines

# Every finding needs a gradient source, and every source is spelled with an identifier that
# looks like a gradient (``.grad``, ``grads``, ``device_grads``, ``d_p``, ``autograd.grad``,
# ``torch.func.grad``); ``no_grad``, ``requires_grad``, ``zero_grad`` are not sources. A file
# without one cannot produce a finding, so it costs only a read, a decode and one regex scan.
# The match may only start at the start of a word: from every position inside a long word
# (a 1 MB string literal, a 100k-digit number) ``\w*grad`` would rescan the rest of it.
_GRAD_TOKEN = re.compile(r"(?<!\w)(?:\w*grad\w*|d_p\w*)")


def might_have_findings(text: str) -> bool:
    """False if ``text`` cannot produce a rule finding (it names no gradient): the pre-filter."""
    if "grad" not in text and "d_p" not in text:
        return False
    for token in set(_GRAD_TOKEN.findall(text)):
        if "autograd" in token or is_grad_name(token):
            return True
    return False


@dataclass
class Diagnostic:
    """One finding: rule ``code`` at ``path:line:col`` (1-based; ``end_col`` exclusive), with
    its ``message``. ``fixable``: an (unsafe) fix exists. In a notebook, ``cell`` is the cell
    (counted from 1) and ``line`` the line in that cell."""

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
    """The result of linting one file: its ``diagnostics`` and what the run did with it."""

    path: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lines: int = 0
    parsed: bool = False
    prefiltered: bool = False  # skipped by the text pre-filter (read and decoded only)
    fixed: int = 0  # findings removed by applied fixes
    stdout_source: bytes | None = None  # --fix on stdin: the fixed source (or the input unchanged)
    diff: str | None = None  # unified diff of the (would-be) fix
    internal_error: bool = False
    new_text: str | None = None  # with --fix: the fixed source (lint_text; lint_bytes writes it)


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
    """Lint one file named on disk (``"-"``: standard input; ``.ipynb``: its code cells).

    ``settings`` selects the rules and whether fixes are applied; ``display`` is the name to
    report (default ``path``). Returns a :class:`FileResult` with the file's diagnostics
    sorted by position. Never raises: an unreadable file is a DTL901 diagnostic, a parse
    failure DTL900, a linter bug or an exhausted time budget DTL902. With ``settings.fix``
    and ``settings.unsafe_fixes`` the fixed source is written back to ``path`` (or, for
    ``"-"``, returned in ``FileResult.stdout_source``).
    """
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
        res.diagnostics.append(_file_diagnostic(display, DECODE_ERROR, f"cannot read file: {exc.strerror or exc}"))
        return res
    if path.endswith(".ipynb"):
        from .notebook import lint_notebook

        return lint_notebook(data, path, settings, display)
    return lint_bytes(data, path, settings, display, write_back=(path != "-"))


def lint_bytes(
    data: bytes, path: str, settings: Settings, display: str | None = None, write_back: bool = False
) -> FileResult:
    """Lint the raw bytes of a Python file: decode them (PEP 263), then :func:`lint_text`.

    ``path`` selects per-file settings; with ``write_back`` an applied fix is written to it.
    Returns the :class:`FileResult`; its ``new_text`` is cleared once it has been used."""
    display = display or path
    text, encoding, err = decode_source(data)
    if text is None:
        assert err is not None
        res = FileResult(display, lines=data.count(b"\n"))
        if DECODE_ERROR in settings.codes_for(path):
            ln, col, msg = err
            res.diagnostics.append(Diagnostic(display, DECODE_ERROR, msg, ln, col, ln, col))
        return res
    res = lint_text(text, path, settings, display)
    new_text, res.new_text = res.new_text, None
    if settings.fix and path == "-":  # as ruff: the source goes to stdout, fixed or not
        res.stdout_source = data if new_text is None or res.internal_error else new_text.encode(encoding)
    elif new_text is not None and write_back and not res.internal_error:
        try:
            with open(path, "wb") as fh:
                fh.write(new_text.encode(encoding))
        except (OSError, UnicodeEncodeError) as exc:
            res.diagnostics.append(_file_diagnostic(display, INTERNAL_ERROR, f"could not write the fix: {exc}"))
            res.internal_error = True
    return res


def lint_text(text: str, path: str, settings: Settings, display: str | None = None) -> FileResult:
    """Lint Python source held in memory.

    ``path`` selects per-file settings (and lets imports of the same tree be followed);
    ``display`` is the name reported (default ``path``). Returns a :class:`FileResult`:
    ``diagnostics`` sorted by position, and with ``settings.fix``/``diff`` and
    ``unsafe_fixes`` the fix as ``diff`` and ``new_text`` (nothing is written). Never raises.
    """
    display = display or path
    res = FileResult(display, lines=text.count("\n") + (0 if text.endswith("\n") or not text else 1))
    try:
        codes = _enabled_codes(text, path, settings)
        if codes is None or _prefiltered(text, codes, settings.prefilter):
            res.prefiltered = codes is not None
            return res
        outcome = _check_parsed(text, path, settings, codes, display)
    except OverBudget:
        msg = f"gave up after {settings.timeout:g} s (the per-file time budget): not checked"
        res.diagnostics, res.internal_error = [_file_diagnostic(display, INTERNAL_ERROR, msg)], True
        return res
    except Exception as exc:  # a bug in the linter: report it on the file, keep going
        msg = f"internal error: {type(exc).__name__}: {exc}"
        res.diagnostics.append(_file_diagnostic(display, INTERNAL_ERROR, msg))
        res.internal_error = True
        return res
    res.diagnostics, res.parsed = outcome.diagnostics, outcome.parsed
    res.fixed, res.diff, res.new_text = outcome.fixed, outcome.diff, outcome.new_text
    return res


@dataclass
class _Outcome:
    """What checking a parsed file gives (built in a worker thread or a forked child)."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    parsed: bool = False
    fixed: int = 0
    diff: str | None = None
    new_text: str | None = None


def _file_diagnostic(display: str, code: str, message: str) -> Diagnostic:
    """A diagnostic about the whole file, shown at 1:1."""
    return Diagnostic(display, code, message, 1, 1, 1, 1)


def _enabled_codes(text: str, path: str, settings: Settings) -> frozenset[str] | None:
    """The codes to check in this file after its ``# dualtype-lint:`` directives; None: skip it."""
    codes = settings.codes_for(path)
    if "dualtype-lint" not in text:
        return codes
    skip_all, file_ignored = file_directive(text)
    return None if skip_all else codes - file_ignored


def _prefiltered(text: str, codes: frozenset[str], prefilter: bool) -> bool:
    """Can the file be skipped without parsing it?"""
    flow = codes & FLOW_CODES
    if not flow:
        return SYNTAX_ERROR not in codes or prefilter
    return prefilter and not might_have_findings(text)


def _check_parsed(text: str, path: str, settings: Settings, codes: frozenset[str], display: str) -> _Outcome:
    """Parse and analyze with libcst within the time budget. Unless the text alone bounds
    the nesting depth low enough (:mod:`dualtype_lint.nesting`), check the structure with
    CPython first: it fails cleanly where libcst crashes. (A syntax error found by libcst is
    located by CPython either way.)"""
    depth = depth_bound(text, light_depth(len(text)))
    if depth is None:
        kind, loc, depth = check_structure(text)
        if loc is not None:
            out = _Outcome()
            if SYNTAX_ERROR in codes:
                ln, col, msg = loc
                msg = msg if msg.startswith("could not") else f"syntax error: {msg}"
                out.diagnostics.append(Diagnostic(display, SYNTAX_ERROR, msg, ln, col, ln, col))
            return out
    heavy = is_heavy(len(text), depth)
    return run_bounded(lambda: _parse_and_analyze(text, path, settings, codes, display), settings.timeout, heavy)


def _parse_and_analyze(text: str, path: str, settings: Settings, codes: frozenset[str], display: str) -> _Outcome:
    out = _Outcome()
    module = _parse(text, codes, display, out.diagnostics)
    if module is None:
        return out
    out.parsed = True
    flow = codes & FLOW_CODES
    if not flow:
        return out
    try:
        with gc_paused():  # the tree is alive: full collections would traverse all of it
            analyzer, findings, ranges = _analyze(module, path, settings, flow)
    except RecursionError:
        if SYNTAX_ERROR in codes:
            msg = "could not analyze: the code is nested too deeply (e.g. a very long operator chain)"
            out.diagnostics.append(_file_diagnostic(display, SYNTAX_ERROR, msg))
        return out
    kept = _unsuppressed(text, findings, ranges, display)
    out.diagnostics.extend(d for d, _ in kept)
    if (settings.fix or settings.diff) and settings.unsafe_fixes:
        _fix(text, path, settings, module, analyzer, kept, out)
    return out


def _parse(text: str, codes: frozenset[str], display: str, diagnostics: list[Diagnostic]) -> cst.Module | None:
    """libcst's tree, or None with a DTL900 appended (if selected)."""
    try:
        return cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        if SYNTAX_ERROR in codes:
            ln, col, msg = _syntax_error_location(text, exc)
            diagnostics.append(Diagnostic(display, SYNTAX_ERROR, f"syntax error: {msg}", ln, col, ln, col))
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # nesting limits, NUL bytes
        if SYNTAX_ERROR in codes:
            msg = f"could not parse: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            diagnostics.append(_file_diagnostic(display, SYNTAX_ERROR, msg))
    return None


_Range = tuple[tuple[int, int], tuple[int, int]]  # (line, 0-based column) of start and end


def _analyze(
    module: cst.Module, path: str, settings: Settings, flow: frozenset[str]
) -> tuple[Analyzer, list[Finding], dict[int, _Range]]:
    """Run the enabled rules; return the analyzer, its findings and their source ranges
    (keyed by ``id(finding.node)``)."""
    rules = [RULES_BY_CODE[c]() for c in sorted(flow)]
    analyzer = Analyzer(module, rules, Dualizers(settings.dualizers), path)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, RECURSION_LIMIT))
    try:
        findings = list(analyzer.run().values())
        ranges = node_ranges(module, [f.node for f in findings]) if findings else {}
        if len(ranges) < len(findings):  # not recorded by the lean pass: ask libcst
            positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
            for f in findings:
                r = positions[f.node]
                ranges[id(f.node)] = ((r.start.line, r.start.column), (r.end.line, r.end.column))
    finally:
        sys.setrecursionlimit(old_limit)
    return analyzer, findings, ranges


def _unsuppressed(
    text: str, findings: list[Finding], ranges: dict[int, _Range], display: str
) -> list[tuple[Diagnostic, Finding]]:
    """The findings as diagnostics, without those under a ``# noqa``, sorted by position."""
    lines = physical_lines(text)
    kept: list[tuple[Diagnostic, Finding]] = []
    for f in findings:
        (ln, col), (end_ln, end_col) = ranges[id(f.node)]
        if not suppressed(lines, f.code, ln, end_ln):
            fixable = f.fix_leaves is not None
            kept.append((Diagnostic(display, f.code, f.message, ln, col + 1, end_ln, end_col + 1, fixable), f))
    kept.sort(key=lambda df: df[0].sort_key())
    return kept


def _fix(
    text: str, path: str, settings: Settings, module: cst.Module, analyzer: Analyzer,
    kept: list[tuple[Diagnostic, Finding]], out: _Outcome,
) -> None:
    """Apply the fixes of the reported findings: the diff into ``out``, and with ``--fix``
    the fixed text and the findings left in it."""
    from .fix import apply_fixes

    leaves = [leaf for _, f in kept if f.fix_leaves for leaf in f.fix_leaves]
    if not leaves:
        return
    new_text = _keep_unparsed(text, module.code, apply_fixes(module, leaves, analyzer.imports))
    if new_text is None or new_text == text:
        return
    display = kept[0][0].path
    out.diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=f"a/{display}",
            tofile=f"b/{display}",
        )
    )
    after = lint_text(new_text, path, replace(settings, fix=False, diff=False), display)
    out.fixed = max(0, len(out.diagnostics) - len(after.diagnostics))
    if settings.fix:
        out.diagnostics = after.diagnostics
        out.new_text = new_text
