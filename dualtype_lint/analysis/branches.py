"""Correlated branches: two ``if`` statements of one block that test the same local variable.

The analysis joins the states of an ``if``'s branches, so in::

    if n == 0:
        v = grad                  # raw
    else:
        v = orthogonalize(grad)
    ...
    if n > 0:
        p.add_(v, alpha=-lr)      # only reached when n != 0: v is orthogonalized

the raw ``v`` of the first branch would reach the update. When the second test decides the
first (``n > 0`` is false whenever ``n == 0`` is true) and nothing between them rebinds ``n``,
the walk is split instead: the block from the first ``if`` to the second is walked once per
branch of the first, and the second ``if`` walks only the branches feasible on that path.

Decided means: the tests compare the same name with number literals (``==``, ``!=``, ``<``,
``<=``, ``>``, ``>=``) or with ``None`` (``is``, ``is not``), or test its truth (``if flag``,
``if not flag``); feasibility is checked on every region of the number line the literals cut,
so it holds for ints and floats alike. A member of a name counts as a name
(``if group['rectify']`` ... ``if group['rectify']``, ``self.nesterov``) when nothing in
between rebinds the name or writes any of its members; a call that changes a hyperparameter
behind the analysis' back is not seen (the same tests in one step read the same setting).
"""

from __future__ import annotations

import dataclasses

from typing import Callable, Sequence

import libcst as cst

from .maps import float_literal
from .paths import string_index

MAX_NESTED = 3  # splits inside splits (each doubles the walk of its span)
MAX_AHEAD = 64  # statements searched for the second test (linear time in long blocks)

# a test ``name <op> literal`` as (name, op, literal); None stands for the literal None
Test = tuple[str, str, "float | None"]

_OPS: dict[type, str] = {
    cst.Equal: "==", cst.NotEqual: "!=", cst.LessThan: "<", cst.LessThanEqual: "<=",
    cst.GreaterThan: ">", cst.GreaterThanEqual: ">=", cst.Is: "is", cst.IsNot: "is not",
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_HOLDS: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _key(node: cst.BaseExpression) -> str | None:
    """A tested value's key: ``n``; ``self.nesterov`` and ``group['rectify']`` (one member of a
    name: a hyperparameter). The name before the first ``.`` or ``[`` is its base."""
    t = type(node)
    if t is cst.Name:
        return node.value
    if t is cst.Attribute and type(node.value) is cst.Name:
        return f"{node.value.value}.{node.attr.value}"
    if t is cst.Subscript and type(node.value) is cst.Name:
        k = string_index(node)
        return None if k is None else f"{node.value.value}[{k!r}]"
    return None


def base_of(key: str) -> str:
    return key.split(".", 1)[0].split("[", 1)[0]


def simple_test(node: cst.BaseExpression) -> Test | None:
    """``n == 0``, ``0 < n``, ``buf is None``, ``group['nesterov']``, ``not self.amsgrad``: the
    key, the operator and the literal."""
    t = type(node)
    if t is cst.UnaryOperation and type(node.operator) is cst.Not:
        k = _key(node.expression)
        return None if k is None else (k, "falsy", 0.0)
    if t is not cst.Comparison:
        k = _key(node)
        return None if k is None else (k, "truthy", 0.0)
    if len(node.comparisons) != 1:
        return None
    left, comp = node.left, node.comparisons[0]
    op = _OPS.get(type(comp.operator))
    right = comp.comparator
    if op is None:
        return None
    if op in ("is", "is not"):
        k = _key(left)
        if k is not None and type(right) is cst.Name and right.value == "None":
            return k, op, None
        return None
    k = _key(left)
    if k is not None:
        c = float_literal(right)
        return None if c is None else (k, op, c)
    k = _key(right)
    if k is not None:
        c = float_literal(left)
        return None if c is None else (k, _FLIP[op], c)
    return None


def _holds(t: Test, x: "float | None") -> bool:
    _, op, k = t
    if op == "truthy" or op == "falsy":
        return (x is not None and x != 0) == (op == "truthy")
    if k is None or x is None:
        same = (k is None) == (x is None)
        return same if op in ("is", "==") else not same if op in ("is not", "!=") else False
    return _HOLDS.get(op, lambda a, b: False)(x, k)


def _points(a: Test, b: Test) -> list["float | None"]:
    """One value from every region the literals of ``a`` and ``b`` cut the line into, and None."""
    ks = sorted({k for k in (a[2], b[2]) if k is not None}) or [0.0]  # 0.0: some value not None
    pts: list[float | None] = [None, ks[0] - 1.0, ks[-1] + 1.0, *ks]
    return pts + [(x + y) / 2 for x, y in zip(ks, ks[1:])]


def feasible(first: Test, first_true: bool, second: Test) -> tuple[bool, bool]:
    """Given ``first`` evaluated to ``first_true``, can ``second`` be true, and can it be false?"""
    can_true = can_false = False
    for x in _points(first, second):
        if _holds(first, x) == first_true:
            if _holds(second, x):
                can_true = True
            else:
                can_false = True
    return can_true, can_false


def correlated(stmts: Sequence[cst.CSTNode], i: int) -> tuple[int, Test] | None:
    """The index of a later sibling ``if`` whose test decides, on some branch of ``stmts[i]``,
    which of its own branches runs; with the first test. None if there is none, or if the
    tested name may be rebound in between."""
    first = simple_test(stmts[i].test)  # type: ignore[attr-defined]
    if first is None:
        return None
    key = first[0]
    for j in range(i + 1, min(len(stmts), i + 1 + MAX_AHEAD)):  # rebinding: checked on a match
        s = stmts[j]
        second = simple_test(s.test) if type(s) is cst.If else None
        if second is not None and second[0] == key:
            if all(all(feasible(first, b, second)) for b in (True, False)):
                return None  # the first test does not decide the second
            if any(assigns(x, base_of(key), members=key != base_of(key)) for x in stmts[i:j]):
                return None
            return j, first
    return None


def declared_outside(function: cst.FunctionDef) -> frozenset[str]:
    """The names declared ``global`` or ``nonlocal`` anywhere in ``function`` (nested functions
    included): a call may rebind them, so their tests are not correlated. Declarations are
    statements, so only statements are visited (no expression holds one)."""
    out: set[str] = set()
    stack: list[cst.CSTNode] = [function.body]
    while stack:
        n = stack.pop()
        t = type(n)
        if t is cst.Global or t is cst.Nonlocal:
            out.update(x.name.value for x in n.names if type(x.name) is cst.Name)
        elif t is cst.SimpleStatementLine or t is cst.SimpleStatementSuite or t is cst.IndentedBlock:
            stack.extend(n.body)
        elif isinstance(n, _HOLDS_STATEMENTS):
            stack.extend(c for c in fast_children(n) if isinstance(c, _HOLDS_STATEMENTS))
    return frozenset(out)


# what statements are found in: blocks, compound statements and their clauses (not expressions)
_HOLDS_STATEMENTS = (
    cst.BaseSuite, cst.BaseCompoundStatement, cst.SimpleStatementLine, cst.Global, cst.Nonlocal,
    cst.Else, cst.Finally, cst.ExceptHandler, cst.ExceptStarHandler, cst.MatchCase,
)
_FIELDS: dict[type, tuple[str, ...]] = {}


def fast_children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """The nodes ``node.children`` lists (not in its order), read from the dataclass fields
    directly: ``children`` runs a visitor over the node, several times slower."""
    names = _FIELDS.get(type(node))
    if names is None:
        names = _FIELDS[type(node)] = tuple(f.name for f in dataclasses.fields(node))
    out: list[cst.CSTNode] = []
    for name in names:
        v = getattr(node, name)
        if isinstance(v, cst.CSTNode):
            out.append(v)
        elif type(v) is tuple or type(v) is list:
            out.extend(x for x in v if isinstance(x, cst.CSTNode))
    return out


def assigns(node: cst.CSTNode, name: str, members: bool = False) -> bool:
    """Might ``node`` rebind the local ``name``? (Any binding form, ``del``, or a
    ``global``/``nonlocal`` declaration of it, nested functions included.) With ``members``,
    also a write into one of its members (``name.x = ``, ``name['k'] = ``)."""
    stack = [node]
    while stack:
        n = stack.pop()
        t = type(n)
        targets: list[cst.CSTNode] = []
        if t is cst.AssignTarget or t is cst.AugAssign or t is cst.AnnAssign or t is cst.Del:
            targets = [n.target]
        elif t is cst.For or t is cst.CompFor or t is cst.NamedExpr:
            targets = [n.target]
        elif t is cst.AsName:
            targets = [n.name]
        elif t is cst.Global or t is cst.Nonlocal:
            targets = [x.name for x in n.names]
        elif (t is cst.FunctionDef or t is cst.ClassDef) and n.name.value == name:
            return True
        for tg in targets:
            if _mentions(tg, name) or (members and _member_of(tg, name)):
                return True
        stack.extend(fast_children(n))
    return False


def _member_of(target: cst.CSTNode, name: str) -> bool:
    """Is a member of ``name`` among the (possibly unpacked) targets ``target``?"""
    stack = [target]
    while stack:
        n = stack.pop()
        t = type(n)
        if t is cst.Attribute or t is cst.Subscript:
            while type(n) is cst.Attribute or type(n) is cst.Subscript:
                n = n.value
            if type(n) is cst.Name and n.value == name:
                return True
        elif t in (cst.Tuple, cst.List, cst.Element, cst.StarredElement):
            stack.extend(fast_children(n))
    return False


def _mentions(node: cst.CSTNode, name: str) -> bool:
    stack = [node]
    while stack:
        n = stack.pop()
        if type(n) is cst.Name and n.value == name:
            return True
        if type(n) is not cst.Attribute and type(n) is not cst.Subscript:  # `x.a = `, `x[0] = `
            stack.extend(fast_children(n))
    return False
