"""The rule interface.

Rules do not walk the tree. The data-flow analyzer (:mod:`dualtype_lint.dataflow`) walks each
file once, tracks which values derive from raw gradients and which expressions name weights,
and at every *update site* calls the hooks of the enabled rules with what it knows. A rule
decides whether that site is its kind of bug and reports it. So all rules share one traversal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..analysis.sites import AssignSite, AugAssignSite, CollectionUpdate, InplaceCall

if TYPE_CHECKING:
    from ..dataflow import Analyzer

__all__ = ["AssignSite", "AugAssignSite", "CollectionUpdate", "InplaceCall", "Rule"]


class Rule:
    """Base class. Subclasses set ``code``, ``name``, ``summary`` and override hooks they need.

    The class docstring is the rule's documentation: it must contain a ``Bad::`` and a
    ``Good::`` example (``tests/lint/test_rules_meta.py`` checks this).
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    fixable: ClassVar[bool] = False  # an (unsafe) fix exists for some findings

    @classmethod
    def handles(cls, hook: str) -> bool:
        """Does this rule override ``hook``? (The analyzer calls only the hooks in use.)"""
        return getattr(cls, hook) is not getattr(Rule, hook)

    def on_inplace(self, a: "Analyzer", site: InplaceCall) -> None:  # pragma: no cover - default
        pass

    def on_augassign(self, a: "Analyzer", site: AugAssignSite) -> None:  # pragma: no cover
        pass

    def on_assign(self, a: "Analyzer", site: AssignSite) -> None:  # pragma: no cover
        pass

    def on_collection(self, a: "Analyzer", site: CollectionUpdate) -> None:  # pragma: no cover
        pass

