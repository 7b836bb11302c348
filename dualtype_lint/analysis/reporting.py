"""Reporting: findings, messages, advice and the operands a fix may wrap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import libcst as cst

from .paths import dotted
from .sites import AssignSite, InplaceCall
from .tables import COMPREHENSIONS, CLEAN_BUILTINS, UPDATE_CALLS, VIEW_METHODS

if TYPE_CHECKING:
    from ..rules.base import Rule


class Finding:
    __slots__ = ("code", "node", "message", "fix_leaves", "owners")

    def __init__(self, code: str, node: cst.CSTNode, message: str, fix_leaves, owners=()) -> None:
        self.code = code
        self.node = node
        self.message = message
        self.fix_leaves = fix_leaves
        self.owners = owners  # ids of the enclosing function definitions


class Reporting:
    """Part of :class:`dualtype_lint.dataflow.Analyzer`."""

    def report(self, rule: Rule, node: cst.CSTNode, message: str, fix_leaves=None) -> None:
        if self.quiet:
            return
        key = (id(self.chain or node), rule.code)
        if key not in self.findings:
            self.findings[key] = Finding(rule.code, node, message, fix_leaves, tuple(map(id, self.fn_nodes)))

    def code(self, node: cst.CSTNode, limit: int = 60) -> str:
        text = " ".join(self.module.code_for_node(node).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def is_update_expr(self, node: cst.BaseExpression) -> bool:
        """Is ``node`` shaped like an out-of-place update: ``a - b``, ``a.add(b)``,
        ``nn.Parameter(a - b)``, ``torch._foreach_sub(a, b)``?"""
        t = type(node)
        if t is cst.BinaryOperation:
            if type(node.operator) in (cst.Add, cst.Subtract):
                return True
            return self.is_update_expr(node.left) or self.is_update_expr(node.right)
        if t is cst.UnaryOperation:
            return self.is_update_expr(node.expression)
        if t is cst.IfExp:
            return self.is_update_expr(node.body) or self.is_update_expr(node.orelse)
        if t is cst.Call:
            f = node.func
            name = f.attr.value if type(f) is cst.Attribute else f.value if type(f) is cst.Name else None
            if name in UPDATE_CALLS:
                return True
            if type(f) is cst.Attribute and name in VIEW_METHODS | {"clone", "to", "contiguous"}:
                return self.is_update_expr(f.value)
        return False

    def is_reassign_update(self, site) -> bool:
        """Does the assignment ``site`` (into a weight, of a gradient) compute new weights:
        ``p - lr * g``, ``_add(p, -lr, g)`` (a helper of this tree whose summary computes
        w + c·g), or, into a slot (``p.data = ``, ``params[i] = ``), a name holding one?
        ``w = p.grad`` and ``ctx.params = (w, grad)`` are not updates."""
        v, node = site.value, site.value_node
        helper = (
            v.weight_derived
            and type(node) is cst.Call
            and self.summaries.may_resolve(self, node.func)
            and bool(self.summaries.functions_of(self, node.func))
        )
        if type(site.target) is cst.Name:
            return v.weight_derived and (self.is_update_expr(node) or helper)
        return (
            self.is_update_expr(node)
            or helper
            or (v.weight_derived and type(node) in (cst.Name, cst.Attribute, cst.Subscript))
        )

    def advice(self, code: str, exprs: Iterable[cst.BaseExpression], each: bool = False) -> str:
        """What to do about a finding. A gradient that went through a function the linter does
        not know (Muon-like code: ``update = my_orthogonalize(buf)``) may be dualized already:
        then the right advice is to declare that function, not to add ``dualize``."""
        fn = self._unknown_callee(exprs)
        if fn is not None:
            return (
                f"if `{fn}` is a duality map (an orthogonalization, say), declare it with "
                f"`--dualizer {fn}` or `dualizers = [\"{fn}\"]` in `[tool.dualtype-lint]`; "
                f"otherwise pass the gradient through `dualize(...)`, or `# noqa: {code}` with the reason"
            )
        return "pass each gradient through `dualize(...)` first" if each else "pass it through `dualize(...)` first"

    def _unknown_callee(self, exprs: Iterable[cst.BaseExpression]) -> str | None:
        stack = list(exprs)
        while stack:
            n = stack.pop()
            t = type(n)
            if t is cst.Name:
                fn = self._call_origin.get(n.value)
                if fn is not None:
                    return fn
            elif t is cst.Call:
                fn = self._callee_name(n.func)
                if fn is not None:
                    return fn
                stack.extend(a.value for a in n.args)
                if type(n.func) is cst.Attribute:
                    stack.append(n.func.value)
            elif t is cst.Attribute:
                stack.append(n.value)
            elif t in (cst.BinaryOperation, cst.UnaryOperation, cst.Subscript):
                stack.extend(c for c in n.children if isinstance(c, cst.BaseExpression))
        return None

    def _callee_name(self, func: cst.BaseExpression) -> str | None:
        """The name of a plain function (``newton(g)``, ``ops.f(g)``, ``self._orth(g)``) that is
        not torch's and not a tensor method."""
        d = dotted(func)
        if d is None:
            return None
        r = self.resolve(func) or d
        head = r.split(".", 1)[0]
        if head in ("torch", "math", "numpy", "functorch") or r in CLEAN_BUILTINS:
            return None
        if type(func) is cst.Attribute:
            base = d.split(".", 1)[0]
            if base != "self" and base not in self.imports:
                return None  # a method of a value: buf.add(g), g.view(...)
        return d.rsplit(".", 1)[-1]

    def is_map_call(self, node: cst.BaseExpression) -> bool:
        return type(node) is cst.Call and self.resolve(node.func) == "map"

    def fix_leaves(self, exprs: Iterable[cst.BaseExpression]) -> list[cst.BaseExpression] | None:
        """The raw-gradient operands to wrap in ``dualize``, or None if there is no clean fix.

        Leaves are names, attributes and subscripts that carry a raw gradient, reached through
        arithmetic only. A gradient hidden inside another call (``f(g)``) has no mechanical fix.
        """
        if self._fixable is None:
            from ..fix import plan

            self._fixable = plan(self.module, self.imports) is not None
        if not self._fixable:
            return None
        out: list[cst.BaseExpression] = []
        was_quiet, self.quiet = self.quiet, True
        saved = self.st.copy()
        try:
            for e in exprs:
                if not self._leaves(e, out):
                    return None
        finally:
            self.quiet = was_quiet
            self.st = saved
        return out or None

    def _leaves(self, e: cst.BaseExpression, out: list) -> bool:
        v = self.expr(e)
        if not v.taint:
            return True
        if v.precond:
            return False  # m/√v is not a raw gradient: dualizing it would be wrong
        t = type(e)
        if t in (cst.Name, cst.Attribute, cst.Subscript):
            if v.weight_ref or v.weight_derived:
                return False  # new weights (p_new = p - lr * g): not a gradient to dualize
            if t is cst.Name and e.value in self._call_origin:
                return False  # update = newton(buf): declare newton a dualizer instead
            out.append(e)
            return True
        if t is cst.BinaryOperation:
            if type(e.operator) in (cst.Divide, cst.FloorDivide, cst.Modulo, cst.Power):
                # never dualize a denominator or an exponent
                return not self.expr(e.right).taint and self._leaves(e.left, out)
            return self._leaves(e.left, out) and self._leaves(e.right, out)
        if t is cst.UnaryOperation:
            return self._leaves(e.expression, out)
        if t in COMPREHENSIONS:
            return self._leaves(e.elt, out) if t is not cst.DictComp else self._leaves(e.value, out)
        return False

    def fire_inplace(self, site: InplaceCall) -> None:
        if not self.quiet:
            for r in self._h_inplace:
                r.on_inplace(self, site)

    def fire_assign(self, site: AssignSite) -> None:
        if not self.quiet:
            for r in self._h_assign:
                r.on_assign(self, site)
