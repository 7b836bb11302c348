"""Glob patterns with git's ``wildmatch`` semantics (``WM_PATHNAME``), matched without regexes.

A translation to a regular expression backtracks exponentially on patterns like
``*a*a*a*a*c`` and turns git-legal classes (``[z-a]``, ``[]]``) into ``re.error``. Here a
pattern is split into ``/``-separated components, a component into ``*``-separated chunks of
single-character matchers, and each chunk is matched greedily at its first possible place:
for one path that is O(len(path) * len(pattern)), whatever the pattern.

Semantics (as git): ``*``, ``?`` and ``[...]`` never match ``/``; a component that is exactly
``**`` matches any number of directories (``a/**/b`` matches ``a/b``; a trailing ``/**``
matches everything inside, at least one component); other runs of ``*`` are a single ``*``;
``\\x`` is a literal ``x``; ``[!...]`` and ``[^...]`` negate; a ``]`` first in a class is
literal; ``a-z`` ranges (an empty range like ``z-a`` matches nothing); ``[:alpha:]`` and the
other POSIX classes. A pattern git would abort on (an unclosed ``[``, an unknown
``[:name:]``, a trailing ``\\``) is invalid: :func:`compile_glob` raises :class:`GlobError`.
"""

from __future__ import annotations

import string
from typing import Callable, Sequence

_POSIX: dict[str, Callable[[str], bool]] = {
    "alnum": lambda c: c.isascii() and c.isalnum(),
    "alpha": lambda c: c.isascii() and c.isalpha(),
    "blank": lambda c: c in " \t",
    "cntrl": lambda c: ord(c) < 32 or ord(c) == 127,
    "digit": lambda c: c in string.digits,
    "graph": lambda c: 33 <= ord(c) <= 126,
    "lower": lambda c: c in string.ascii_lowercase,
    "print": lambda c: 32 <= ord(c) <= 126,
    "punct": lambda c: c in string.punctuation,
    "space": lambda c: c in " \t\n\r\f\v",
    "upper": lambda c: c in string.ascii_uppercase,
    "xdigit": lambda c: c in string.hexdigits,
}


class GlobError(ValueError):
    """A pattern git's wildmatch aborts on: it can never match anything."""


def _parse_class(pat: str, i: int) -> tuple[Callable[[str], bool], int]:
    """``pat[i]`` is ``[``: return a predicate and the index after the closing ``]``."""
    n = len(pat)
    i += 1
    negated = i < n and pat[i] in "!^"
    if negated:
        i += 1
    singles: set[str] = set()
    ranges: list[tuple[str, str]] = []
    named: list[Callable[[str], bool]] = []
    first = True
    while True:
        if i >= n:
            raise GlobError("unclosed '['")
        c = pat[i]
        if c == "]" and not first:
            i += 1
            break
        first = False
        if c == "\\":
            if i + 1 >= n:
                raise GlobError("'\\' at the end of a class")
            lo, i = pat[i + 1], i + 2
        elif c == "[" and pat.startswith("[:", i):
            close = pat.find("]", i + 2)
            if close == -1:
                raise GlobError("unclosed '['")
            if close - 1 >= i + 2 and pat[close - 1] == ":":
                name = pat[i + 2 : close - 1]
                if name not in _POSIX:
                    raise GlobError(f"unknown character class [:{name}:]")
                named.append(_POSIX[name])
                i = close + 1
                continue
            lo, i = "[", i + 1  # no ":]": a literal '['
        else:
            lo, i = c, i + 1
        if i + 1 < n and pat[i] == "-" and pat[i + 1] != "]":
            hi, i = pat[i + 1], i + 2
            if hi == "\\":
                if i >= n:
                    raise GlobError("'\\' at the end of a class")
                hi, i = pat[i], i + 1
            ranges.append((lo, hi))  # lo > hi: an empty range, as in git
        else:
            singles.add(lo)

    def pred(ch: str) -> bool:
        hit = ch in singles or any(lo <= ch <= hi for lo, hi in ranges) or any(f(ch) for f in named)
        return hit != negated and ch != "/"

    return pred, i


def _parse_component(pat: str) -> list[list]:
    """A component (no ``/``) as chunks of char matchers; the chunks were separated by ``*``.
    ``[[]]`` is the pattern without a star; ``[[], []]`` is ``*``."""
    chunks: list[list] = [[]]
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == "*":
            while i < n and pat[i] == "*":
                i += 1
            chunks.append([])
            continue
        if c == "?":
            chunks[-1].append(None)
            i += 1
        elif c == "[":
            pred, i = _parse_class(pat, i)
            chunks[-1].append(pred)
        elif c == "\\":
            if i + 1 >= n:
                raise GlobError("'\\' at the end of the pattern")
            chunks[-1].append(pat[i + 1])
            i += 2
        else:
            chunks[-1].append(c)
            i += 1
    return chunks


def _char_ok(m, ch: str) -> bool:
    """``m``: a literal character, None for ``?``, or a class predicate."""
    if m is None:
        return ch != "/"
    if isinstance(m, str):
        return m == ch
    return m(ch)


def _chunk_at(chunk: Sequence, s: str, pos: int) -> bool:
    if pos + len(chunk) > len(s):
        return False
    return all(_char_ok(m, s[pos + k]) for k, m in enumerate(chunk))


def _match_component(chunks: list[list], s: str) -> bool:
    if len(chunks) == 1:
        return len(chunks[0]) == len(s) and _chunk_at(chunks[0], s, 0)
    head, middle, tail = chunks[0], chunks[1:-1], chunks[-1]
    if len(head) + len(tail) > len(s) or not _chunk_at(head, s, 0):
        return False
    end = len(s) - len(tail)
    if not _chunk_at(tail, s, end):
        return False
    pos = len(head)
    for chunk in middle:  # the first place each chunk fits is never worse than a later one
        while pos + len(chunk) <= end and not _chunk_at(chunk, s, pos):
            pos += 1
        if pos + len(chunk) > end:
            return False
        pos += len(chunk)
    return True


_GLOBSTAR = "**"


class Glob:
    """A compiled pattern; :meth:`match` takes a ``/``-separated relative path."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        parts = pattern.split("/")
        self.parts: list = [_GLOBSTAR if p == "**" else _parse_component(p) for p in parts]
        # "**/**" is "**"
        self.parts = [p for k, p in enumerate(self.parts) if not (p is _GLOBSTAR and k and self.parts[k - 1] is _GLOBSTAR)]

    def match(self, path: str) -> bool:
        comps = path.split("/")
        parts = self.parts
        # runs of ordinary components between globstars; a trailing globstar needs >= 1 component
        groups: list[list] = [[]]
        for p in parts:
            if p is _GLOBSTAR:
                groups.append([])
            else:
                groups[-1].append(p)
        trailing = parts[-1] is _GLOBSTAR

        def run_at(group: list, k: int) -> bool:
            return k + len(group) <= len(comps) and all(
                _match_component(g, comps[k + j]) for j, g in enumerate(group)
            )

        if len(groups) == 1:
            return len(groups[0]) == len(comps) and run_at(groups[0], 0)
        head, middle, tail = groups[0], groups[1:-1], groups[-1]
        end = len(comps) - len(tail) - (1 if trailing else 0)
        if end < len(head) or not run_at(head, 0) or not run_at(tail, len(comps) - len(tail)):
            return False
        k = len(head)
        for group in middle:
            while k + len(group) <= end and not run_at(group, k):
                k += 1
            if k + len(group) > end:
                return False
            k += len(group)
        return True


def compile_glob(pattern: str) -> Glob:
    """Raise :class:`GlobError` for a pattern git would abort on."""
    return Glob(pattern)
