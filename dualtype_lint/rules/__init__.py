"""All rules, in code order. One class per rule; the docstring is its documentation."""

from __future__ import annotations

from .base import Rule
from .dtl001_augassign import RawGradAugAssign
from .dtl002_inplace import RawGradInplaceMethod
from .dtl003_reassign import RawGradReassignment
from .dtl004_foreach import RawGradForeach
from .dtl005_functional import RawGradFunctionalUpdate
from .dtl006_precond import PreconditionedUpdate
from .meta import DecodeErrorRule, InternalErrorRule, SyntaxErrorRule

ALL_RULES: tuple[type[Rule], ...] = (
    RawGradAugAssign,
    RawGradInplaceMethod,
    RawGradReassignment,
    RawGradForeach,
    RawGradFunctionalUpdate,
    PreconditionedUpdate,
    SyntaxErrorRule,
    DecodeErrorRule,
    InternalErrorRule,
)
RULES_BY_CODE: dict[str, type[Rule]] = {r.code: r for r in ALL_RULES}
# Rules driven by the data-flow analysis (the others describe the file itself).
FLOW_CODES: frozenset[str] = frozenset(r.code for r in ALL_RULES if not r.code.startswith("DTL9"))
SYNTAX_ERROR, DECODE_ERROR, INTERNAL_ERROR = "DTL900", "DTL901", "DTL902"

__all__ = ["ALL_RULES", "RULES_BY_CODE", "FLOW_CODES", "Rule"]
