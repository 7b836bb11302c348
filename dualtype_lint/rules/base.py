"""The rule interface.

Rules do not walk the tree. The data-flow analyzer (:mod:`dualtype_lint.dataflow`) walks each
file once, tracks which values derive from raw gradients and which expressions name weights,
and at every *update site* calls the hooks of the enabled rules with what it knows. A rule
decides whether that site is its kind of bug and reports it. So all rules share one traversal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import libcst as cst

if TYPE_CHECKING:
    from ..dataflow import Analyzer, Value


@dataclass(frozen=True)
class InplaceCall:
    """An in-place write through a call: ``t.add_(x)``, ``torch._foreach_add_(ts, xs)``, ``out=t``."""

    node: cst.Call
    kind: str  # "method" | "foreach" | "out" | "function"
    name: str  # the method or function name, e.g. "add_" or "_foreach_add_"
    target: cst.BaseExpression  # what is written (the root of a chain like buf.mul_(m).add_(g))
    target_is_weight: bool
    tainted_args: Sequence[cst.BaseExpression]  # argument expressions carrying a raw gradient


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


class Rule:
    """Base class. Subclasses set ``code``, ``name``, ``summary`` and override hooks they need.

    The class docstring is the rule's documentation: it must contain a ``Bad::`` and a
    ``Good::`` example (``tests/lint/test_rules_meta.py`` checks this).
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    fixable: ClassVar[bool] = False  # an (unsafe) fix exists for some findings

    def on_inplace(self, a: "Analyzer", site: InplaceCall) -> None:  # pragma: no cover - default
        pass

    def on_augassign(self, a: "Analyzer", site: AugAssignSite) -> None:  # pragma: no cover
        pass

    def on_assign(self, a: "Analyzer", site: AssignSite) -> None:  # pragma: no cover
        pass

    def on_collection(self, a: "Analyzer", site: CollectionUpdate) -> None:  # pragma: no cover
        pass


HOOKS = ("on_inplace", "on_augassign", "on_assign", "on_collection")


def overrides(rule: type[Rule], hook: str) -> bool:
    return getattr(rule, hook) is not getattr(Rule, hook)
