"""Physical lines as Python counts them, and where a backslash-continued line ends.

``str.splitlines`` also splits at form feeds, ``\\x1c``-``\\x1e``, ``\\x85`` and
``\\u2028``/``\\u2029``, which Python's tokenizer does not: a file with a form feed on a line of
its own would put every ``# noqa`` after it on the wrong line.
"""

from __future__ import annotations

import re

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def physical_lines(text: str, keepends: bool = False) -> list[str]:
    lines = _LINE.findall(text)
    if keepends:
        return lines
    return [ln.rstrip("\r\n") for ln in lines]


def continues(line: str) -> bool:
    """The line ends in a backslash continuation (an approximation: a comment or a string
    ending in a backslash counts too; for noqa placement that is harmless)."""
    body = line.rstrip("\r\n")
    return body.endswith("\\") and (len(body) - len(body.rstrip("\\"))) % 2 == 1


def logical_end(lines: list[str], ln: int) -> int:
    """The 1-based line where the logical line through line ``ln`` stops continuing with ``\\``:
    a comment cannot follow a backslash, so its ``# noqa`` goes there."""
    while 1 <= ln < len(lines) and continues(lines[ln - 1]):
        ln += 1
    return ln
