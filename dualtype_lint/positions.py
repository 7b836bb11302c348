"""Line and column of a few nodes, without libcst's PositionProvider.

PositionProvider records a range for *every* node during a position-tracking code generation
and costs about twice a parse. Findings are few, so this does the same code generation but
records only the requested nodes and counts lines with ``str.count``: about a third of the cost.
Ranges are PositionProvider's (syntactic, whitespace excluded); if a requested node was not
recorded (it never is for the node types the rules report, but libcst may change), the caller
falls back to PositionProvider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import libcst as cst

# The lean pass subclasses libcst's CodegenState, which is not public API. It is used only on the
# libcst versions it was tested on (TESTED_LIBCST, checked by tests/lint/test_units.py against
# PositionProvider); on any other version, or if the import fails, node_ranges returns nothing
# and the engine asks the public PositionProvider instead (correct, about 3x slower on findings).
TESTED_LIBCST = ((1, 1), (1, 9))  # inclusive range of (major, minor) versions


def _libcst_version() -> tuple[int, int]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("libcst").split(".")
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (PackageNotFoundError, ValueError, IndexError):  # pragma: no cover
        return (0, 0)


try:
    from libcst._nodes.internal import CodegenState
except ImportError:  # pragma: no cover - libcst reorganized its internals
    CodegenState = None  # type: ignore[assignment,misc]
LEAN = CodegenState is not None and TESTED_LIBCST[0] <= _libcst_version() <= TESTED_LIBCST[1]

_NEWLINE = re.compile(r"\r\n?|\n")


class _Null:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()


class _Record:
    __slots__ = ("state", "key", "start")

    def __init__(self, state: "_State", key: int) -> None:
        self.state = state
        self.key = key

    def __enter__(self) -> None:
        self.start = (self.state.line, self.state.column)

    def __exit__(self, *exc: object) -> None:
        st = self.state
        st.found[self.key] = (self.start, (st.line, st.column))


@dataclass(frozen=False)
class _State(CodegenState if CodegenState is not None else object):  # type: ignore[misc]
    targets: frozenset = frozenset()
    found: dict = field(default_factory=dict)
    line: int = 1  # 1-based
    column: int = 0  # 0-based

    def add_indent_tokens(self) -> None:
        for t in self.indent_tokens:
            self.add_token(t)

    def add_token(self, value: str) -> None:
        self.tokens.append(value)
        if "\r" in value:
            parts = _NEWLINE.split(value)
            if len(parts) > 1:
                self.line += len(parts) - 1
                self.column = len(parts[-1])
            else:
                self.column += len(value)
            return
        n = value.count("\n")
        if n:
            self.line += n
            self.column = len(value) - value.rfind("\n") - 1
        else:
            self.column += len(value)

    def record_syntactic_position(self, node, *, start_node=None, end_node=None):  # type: ignore[override]
        key = id(node)
        if key in self.targets and start_node is None and end_node is None:
            return _Record(self, key)
        return _NULL


def node_ranges(
    module: cst.Module, nodes: Iterable[cst.CSTNode]
) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """``id(node) -> ((line, col0), (end_line, end_col0))`` for the requested nodes; nodes it
    could not place are missing (the caller then uses libcst's PositionProvider)."""
    if not LEAN:  # pragma: no cover - an untested libcst
        return {}
    targets = frozenset(id(n) for n in nodes)
    try:
        state = _State(default_indent=module.default_indent, default_newline=module.default_newline, targets=targets)
        module._codegen(state)
    except Exception:  # pragma: no cover - libcst changed its code generation
        return {}
    return state.found
