"""Access paths: ``state['m']``, ``self.weight``, ``bufs[*]`` as strings."""

from __future__ import annotations

import libcst as cst


def dotted(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while type(node) is cst.Attribute:
        parts.append(node.attr.value)
        node = node.value
    if type(node) is not cst.Name:
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def key_of(node: cst.BaseExpression) -> str | None:
    """The access path of a Name/Attribute/Subscript chain: ``state['m']``, ``bufs[*]``."""
    t = type(node)
    if t is cst.Name:
        return node.value
    if t is cst.Attribute:
        k = key_of(node.value)
        return None if k is None else f"{k}.{node.attr.value}"
    if t is cst.Subscript:
        k = key_of(node.value)
        if k is None:
            return None
        sl = node.slice
        if len(sl) == 1 and type(sl[0].slice) is cst.Index:
            idx = sl[0].slice.value
            if type(idx) is cst.SimpleString and idx.value[:1] in "'\"":
                return f"{k}[{idx.value[1:-1]!r}]"
            if type(idx) is cst.Integer:
                return f"{k}[{idx.value}]"
        return f"{k}[*]"
    return None


def string_index(node: cst.Subscript) -> str | None:
    sl = node.slice
    if len(sl) == 1 and type(sl[0].slice) is cst.Index:
        idx = sl[0].slice.value
        if type(idx) is cst.SimpleString and idx.value[:1] in "'\"":
            return idx.value[1:-1]
    return None
