"""Diagnostics about the file itself rather than its code. They have no hooks."""

from __future__ import annotations

from .base import Rule


class SyntaxErrorRule(Rule):
    """DTL900 syntax-error: the file could not be parsed, so it was not checked.

    Bad::

        def f(:
            ...

    Good::

        def f():
            ...

    Reported at CPython's line and column for the error; the run continues with the other
    files. Files skipped by the pre-filter are not parsed: ``--no-prefilter`` checks the syntax
    of every file.
    """

    code = "DTL900"
    name = "syntax-error"
    summary = "file could not be parsed"


class DecodeErrorRule(Rule):
    """DTL901 decode-error: the file is not valid text in its declared encoding (UTF-8 unless
    a PEP 263 ``# -*- coding: ... -*-`` line says otherwise), or could not be read.

    Bad::

        b"x = '\\xff'\\n"   # a latin-1 byte in a file without a coding line

    Good::

        x = 'ÿ'            # saved as UTF-8

    """

    code = "DTL901"
    name = "decode-error"
    summary = "file could not be read or decoded"


class InternalErrorRule(Rule):
    """DTL902 internal-error: the linter itself failed on this file (a bug: please report it).
    The run continues, and the exit code is 2.

    Bad::

        (a crash inside dualtype-lint)

    Good::

        (no crash)

    """

    code = "DTL902"
    name = "internal-error"
    summary = "the linter failed on this file"
