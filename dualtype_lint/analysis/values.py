"""Abstract values and the state at one program point.

A :class:`Value` says whether an expression carries a raw gradient (``taint``), refers to a
weight or a list of weights (``weight_ref``), is computed from weights (``weight_derived``), the
values of its elements (tuples, ``zip``), and a few *kind* flags that refine a gradient:

``PRECOND``
    tainted only through an elementwise preconditioner (Adam's m/√v, Adagrad, RMSprop).
``ROOT`` / ``INVROOT``
    an elementwise (reciprocal) square root of a gradient statistic: √v, the denominator.
``NORMV`` / ``INVNORM``
    a norm or reduction of a gradient (a magnitude, possibly per row) and its reciprocal.
``PRIMAL``
    the output of a duality map (``dualize``, ``sign``, ``g / ‖g‖``, U·Vᵀ): clean.
``SQUARE``
    quadratic in the gradient (``g * g``, ``g.pow(2)``, ``(g - m).square()``): not yet a statistic.
``MOMENT2``
    a second-moment or curvature statistic of the gradient, with no root taken: a buffer that
    squares accumulate into (``v.mul_(β).addcmul_(g, g)``, ``v = β * v + g * g``), or a
    Hessian(-diagonal) estimate. Dividing a gradient by it (``m / (v + eps)``) preconditions it
    elementwise, as ``m / √v`` does; dividing by this step's square (``g / (1 + g²)``) does not.
    On a clean value it marks a Hessian estimate read by name (``state['hessian']``).
"""

from __future__ import annotations

from typing import Iterable

PRECOND = 1
ROOT = 2
INVROOT = 4
NORMV = 8
INVNORM = 16
PRIMAL = 32
SQUARE = 64
MOMENT2 = 128
# flags that describe a gradient (kept only while every tainted operand has them)
TAINT_FLAGS = PRECOND | ROOT | INVROOT | NORMV | SQUARE | MOMENT2
CLEAN_FLAGS = NORMV | INVNORM | PRIMAL | MOMENT2


class Value:
    __slots__ = ("taint", "weight_ref", "weight_derived", "elems", "flags")

    def __init__(
        self,
        taint: bool = False,
        weight_ref: bool = False,
        weight_derived: bool = False,
        elems: tuple["Value", ...] | None = None,
        flags: int = 0,
    ) -> None:
        self.taint = taint
        self.weight_ref = weight_ref
        self.weight_derived = weight_derived
        self.elems = elems
        self.flags = flags

    @property
    def precond(self) -> bool:
        return self.taint and bool(self.flags & PRECOND)

    @property
    def primal(self) -> bool:
        return not self.taint and bool(self.flags & PRIMAL)

    def __repr__(self) -> str:  # for debugging and test failure messages
        flags = [n for n in ("taint", "weight_ref", "weight_derived") if getattr(self, n)]
        names = ("PRECOND", "ROOT", "INVROOT", "NORMV", "INVNORM", "PRIMAL", "SQUARE", "MOMENT2")
        flags += [n for i, n in enumerate(names) if self.flags & (1 << i)]
        return f"Value({', '.join(flags)}{', elems=' + repr(self.elems) if self.elems else ''})"


CLEAN = Value()
TAINT = Value(True)
WEIGHT = Value(False, True)
NEW_WEIGHTS = Value(False, True, True)  # weights recomputed by a (reported) raw-gradient update
PRIMAL_VALUE = Value(flags=PRIMAL)
NORM_VALUE = Value(flags=NORMV)


def merge_flags(vals: Iterable[Value], taint: bool) -> int:
    """Flags of a value made of ``vals``: a gradient keeps a flag only if every tainted operand
    has it; a clean value keeps the clean flags some operand has and no tainted operand lacks."""
    if taint:
        f = TAINT_FLAGS
        for v in vals:
            if v.taint:
                f &= v.flags | SQUARE if v.flags & MOMENT2 else v.flags  # a second moment is quadratic
        return f
    f = 0
    for v in vals:
        f |= v.flags & CLEAN_FLAGS
    return f


def join(vals: Iterable[Value]) -> Value:
    """May-union: the value is any one of ``vals`` (branches, elements of a collection)."""
    vals = tuple(vals)
    t = r = d = False
    for v in vals:
        t = t or v.taint
        r = r or v.weight_ref
        d = d or v.weight_derived
    fl = merge_flags(vals, t)
    if not (t or r or d or fl):
        return CLEAN
    return Value(t, r, d, None, fl)


def join_struct(vals: Iterable[Value]) -> Value:
    """:func:`join`, keeping per-position values when every value is a tuple of one length
    (``return P, R`` in every branch of a helper)."""
    vals = tuple(vals)
    j = join(vals)
    if vals and all(v.elems is not None for v in vals):
        n = len(vals[0].elems)
        if all(len(v.elems) == n for v in vals):
            cols = tuple(join(v.elems[i] for v in vals) for i in range(n))
            return Value(j.taint, j.weight_ref, j.weight_derived, cols, j.flags)
    return j


def combine(vals: Iterable[Value]) -> Value:
    """The value of an arithmetic combination: references become derivations.

    An operand that is both a weight reference and tainted is an ambiguous element of a mixed
    collection (``for x in (grad, weight)``): it does not make the result weight-derived.
    """
    vals = tuple(vals)
    t = d = False
    for v in vals:
        t = t or v.taint
        d = d or v.weight_derived or (v.weight_ref and not v.taint)
    fl = merge_flags(vals, t)
    if not (t or d or fl):
        return CLEAN
    return Value(t, False, d, None, fl)


class State:
    """What is known at one program point of one function."""

    __slots__ = ("tainted", "weights", "derived", "bound", "aliases", "flags", "elems")

    def __init__(self) -> None:
        self.tainted: set[str] = set()  # access paths holding raw gradients
        self.weights: set[str] = set()  # access paths bound to weights
        self.derived: set[str] = set()  # access paths computed from weights
        self.bound: set[str] = set()  # names assigned in this scope (name heuristics off)
        self.aliases: dict[str, str] = {}  # name -> access path it refers to (buf = state["m"])
        self.flags: dict[str, int] = {}  # access path -> kind flags of its value
        self.elems: dict[str, tuple[Value, ...]] = {}  # name -> per-position values (zip tuples)

    def copy(self) -> "State":
        s = State()
        s.tainted = set(self.tainted)
        s.weights = set(self.weights)
        s.derived = set(self.derived)
        s.bound = set(self.bound)
        s.aliases = dict(self.aliases)
        s.flags = dict(self.flags)
        s.elems = dict(self.elems)
        return s

    def join(self, other: "State") -> None:
        if self.flags or other.flags:
            self.flags = _join_flags(self, other)
        self.tainted |= other.tainted
        self.weights |= other.weights
        self.derived |= other.derived
        self.bound |= other.bound
        for k, v in other.aliases.items():
            self.aliases.setdefault(k, v)
        for k in [k for k, e in self.elems.items() if other.elems.get(k, e) is not e]:
            del self.elems[k]
        for k, e in other.elems.items():
            self.elems.setdefault(k, e)

    def same(self, other: "State") -> bool:
        return (
            self.tainted == other.tainted
            and self.weights == other.weights
            and self.derived == other.derived
            and self.bound == other.bound
            and self.flags == other.flags
        )


def _join_flags(a: State, b: State) -> dict[str, int]:
    """A flag survives a join if every side on which the path holds something has it. A
    running statistic on one side and a norm on the other (``v.copy_(n)`` on the first step,
    ``v.mul_(β).add_(n)`` after) is a statistic."""
    out: dict[str, int] = {}
    for k in a.flags.keys() | b.flags.keys():
        f = -1
        tainted = k in a.tainted or k in b.tainted
        for s in (a, b):
            # a gradient on one side, a clean value on the other (m/√v or g.sign()): the
            # gradient's kind is the tainted side's
            if k in s.tainted or (not tainted and k in s.flags):
                f &= s.flags.get(k, 0)
        if not f & MOMENT2 and not tainted:
            fa, fb = a.flags.get(k, 0), b.flags.get(k, 0)
            if (fa | fb) & MOMENT2 and fa & (NORMV | MOMENT2) and fb & (NORMV | MOMENT2):
                f = MOMENT2
        if f > 0:
            out[k] = f
    return out
