"""Update sites: what the analyzer hands to the rules at a write into something.

Kept apart from the analyzer so that :mod:`dualtype_lint.rules` can import them without
importing the analyzer (and the analyzer without importing the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import libcst as cst

if TYPE_CHECKING:
    from .values import Value


@dataclass(frozen=True)
class InplaceCall:
    """An in-place write through a call: ``t.add_(x)``, ``torch._foreach_add_(ts, xs)``, ``out=t``,
    or a helper function that writes one argument into another (``_add_scaled_(p, buf, -lr)``)."""

    node: cst.Call
    kind: str  # "method" | "foreach" | "out" | "function" | "helper"
    name: str  # the method or function name, e.g. "add_" or "_foreach_add_"
    target: cst.BaseExpression  # what is written (the root of a chain like buf.mul_(m).add_(g))
    target_is_weight: bool
    tainted_args: Sequence[cst.BaseExpression]  # argument expressions carrying a raw gradient
    # every gradient argument is elementwise preconditioned (Adam's m/√v): DTL006, not DTL002/4
    preconditioned: bool = False
    fix_args: Sequence[cst.BaseExpression] = ()  # the tainted arguments a fix may wrap


@dataclass(frozen=True)
class AugAssignSite:
    node: cst.AugAssign
    target_is_weight: bool
    value: "Value"


@dataclass(frozen=True)
class AssignSite:
    """One target of ``target = value`` (or ``:=``/annotated assignment)."""

    node: cst.CSTNode  # the statement or expression that assigns
    target: cst.BaseExpression
    value_node: cst.BaseExpression
    value: "Value"
    target_is_weight: bool


@dataclass(frozen=True)
class CollectionUpdate:
    """A comprehension or ``map`` that computes one element per weight."""

    node: cst.BaseExpression
    element: "Value"
    fix_expr: cst.BaseExpression | None  # the per-element expression, when it is written out
