"""Expressions: the abstract value of every expression but calls (see :mod:`.calls`)."""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from .. import names as _names
from ..names import is_grad_name, is_weight_name
from . import maps
from .ops import binop, names_in
from .paths import string_index, key_of
from .sites import CollectionUpdate
from .tables import CLEAN_ATTRS, VIEW_ATTRS
from .values import CLEAN, combine as _combine, join as _join, MOMENT2, NEW_WEIGHTS, TAINT, Value

# filled by dualtype_lint.dataflow: expression type -> Analyzer method
EXPR_HANDLERS: dict = {}


class Expressions:
    """Part of :class:`dualtype_lint.dataflow.Analyzer`."""

    def expr(self, node: cst.BaseExpression) -> Value:
        f = EXPR_HANDLERS.get(type(node))
        if f is None:
            return self._e_generic(node)
        return f(self, node)

    def _e_generic(self, node: cst.CSTNode) -> Value:
        vals = [self.expr(c) for c in node.children if isinstance(c, cst.BaseExpression)]
        return _combine(vals)

    def _e_const(self, node) -> Value:
        return CLEAN

    def _e_name(self, node: cst.Name) -> Value:
        n = node.value
        st = self.st
        taint = n in st.tainted
        if not taint and n not in st.bound and (is_grad_name(n) or self._hand_grad(n)):
            taint = True
            self.grad_fns.update(map(id, self.fn_nodes))
        ref = n in st.weights or is_weight_name(n)
        derived = n in st.derived
        fl = st.flags.get(n, 0) if st.flags else 0
        if not taint and maps.names_curvature(n):
            fl |= MOMENT2  # exp_hessian_diag_sq, hessian_moment: a Hessian estimate
        if not (taint or ref or derived or fl):
            return CLEAN
        return Value(taint, ref, derived, st.elems.get(n) if st.elems else None, fl)

    def _paired_grad(self, n: str, value_node: cst.BaseExpression) -> bool:
        """``dW1 = X.T @ dout`` is the gradient of ``W1``; ``dW0 = distribute(W0)`` is not."""
        if not self._hand_grad(n):
            return False
        rest = n[2:] if n[1] == "_" else n[1:]
        return not any(type(x) is cst.Name and x.value == rest for x in names_in(value_node))

    def _hand_grad(self, n: str) -> bool:
        """``dW1`` next to ``W1``, ``d_w`` next to ``w``: a hand-computed gradient (see names)."""
        if n[:1] != "d":  # is_paired_grad_name: a d<name>, or g_slice-style (g_...)
            return n[:2] == "g_" and _names.is_paired_grad_name(n, self.st.weights, self.st.bound)
        if len(n) > 1:
            self.rest_queries.add(n[2:] if n[1] == "_" else n[1:])
        return _names.is_paired_grad_name(n, self.st.weights, self.st.bound)

    def _e_attribute(self, node: cst.Attribute) -> Value:
        attr = node.attr.value
        if attr == "grad":
            self.grad_fns.update(map(id, self.fn_nodes))  # a source inside these functions
            k = key_of(node.value)
            if k is not None:
                self.st.weights.add(k)  # whatever has a .grad is a parameter
                alias = self.st.aliases.get(k)  # buff = model._buffers[key]: so is the slot
                if alias is not None:
                    self.st.weights.add(alias)
            self.expr(node.value)
            return TAINT
        base = self.expr(node.value)
        if attr in CLEAN_ATTRS:
            return CLEAN
        if attr in VIEW_ATTRS:
            return base
        k = key_of(node)
        st = self.st
        tk = k is not None and k in st.tainted
        # p.update = -lr * g elsewhere in the file: `.update` of a weight carries a gradient
        taint = base.taint or is_grad_name(attr) or tk or (attr in self.carried and base.weight_ref)
        ref = is_weight_name(attr) or (k is not None and k in st.weights)
        if not (taint or ref):
            return Value(flags=MOMENT2) if maps.names_curvature(attr) else CLEAN
        fl = st.flags.get(k, 0) if tk and not base.taint else base.flags if taint else 0
        return Value(taint, ref, False, None, fl)

    def _e_subscript(self, node: cst.Subscript) -> Value:
        base = self.expr(node.value)
        for el in node.slice:
            s = el.slice
            if type(s) is cst.Index:
                self.expr(s.value)
        k = key_of(node)
        st = self.st
        s = string_index(node)
        if s is not None:
            taint = (k is not None and k in st.tainted) or is_grad_name(s) or (
                base.taint and not is_weight_name(s)
            )
            ref = is_weight_name(s) or (k is not None and k in st.weights)
        else:
            if base.elems is not None and len(node.slice) == 1:
                i = maps.float_literal(node.slice[0].slice.value) if type(node.slice[0].slice) is cst.Index else None
                if i is not None and i == int(i) and -len(base.elems) <= i < len(base.elems):
                    return base.elems[int(i)]  # pair[1] of a zip tuple
            taint = base.taint or (k is not None and k in st.tainted)
            ref = base.weight_ref or (k is not None and k in st.weights)
        curv = not taint and s is not None and maps.names_curvature(s)  # state['hessian']
        if not (taint or ref or base.weight_derived or curv):
            return CLEAN
        fl = st.flags.get(k, base.flags) if (k is not None and st.flags) else base.flags
        return Value(taint, ref, base.weight_derived, None, fl if taint else MOMENT2 if curv else 0)

    def _e_binop(self, node: cst.BinaryOperation) -> Value:
        left = self.expr(node.left)
        right = self.expr(node.right)
        return binop(type(node.operator), left, right, node.right)

    def _e_unary(self, node: cst.UnaryOperation) -> Value:
        v = self.expr(node.expression)
        if type(node.operator) is cst.Not:
            return CLEAN
        return _combine((v,))

    def _e_boolop(self, node: cst.BooleanOperation) -> Value:
        return _join((self.expr(node.left), self.expr(node.right)))

    def _e_compare(self, node: cst.Comparison) -> Value:
        self.expr(node.left)
        for c in node.comparisons:
            self.expr(c.comparator)
        return CLEAN

    def _e_ifexp(self, node: cst.IfExp) -> Value:
        self.expr(node.test)
        return _join((self.expr(node.body), self.expr(node.orelse)))

    def _e_seq(self, node) -> Value:
        vals = []
        for el in node.elements:
            vals.append(self.expr(el.value))
        j = _join(vals)
        # a collection holding weights is derived from them (for unpacking after a call)
        derived = j.weight_derived or (j.weight_ref and j.taint)
        if type(node) is cst.Tuple or type(node) is cst.List:
            return Value(j.taint, j.weight_ref, derived, tuple(vals))
        return Value(j.taint, j.weight_ref, derived) if derived != j.weight_derived else j

    def _e_dict(self, node: cst.Dict) -> Value:
        vals = []
        for el in node.elements:
            if type(el) is cst.DictElement:
                self.expr(el.key)
            vals.append(self.expr(el.value))
        return _join(vals)

    def _e_named(self, node: cst.NamedExpr) -> Value:
        v = self.expr(node.value)
        self._assign(node, node.target, node.value, v)
        return v

    def _e_await(self, node) -> Value:
        return self.expr(node.expression)

    def _e_yield(self, node: cst.Yield) -> Value:
        if node.value is not None:
            v = node.value
            self.expr(v.item if type(v) is cst.From else v)
        return CLEAN

    def _e_lambda(self, node: cst.Lambda) -> Value:
        saved = self.st
        self.st = saved.copy()
        self._bind_params(node.params)
        try:
            self.expr(node.body)
        finally:
            self.st = saved
        return CLEAN

    def _e_comp(self, node) -> Value:
        saved = self.st
        self.st = saved.copy()
        try:
            for_in = node.for_in
            while for_in is not None:
                it = self.elem_of(for_in.iter)
                self._bind(for_in.target, it, None)
                for cond in for_in.ifs:
                    self.expr(cond.test)
                for_in = for_in.inner_for_in
            if type(node) is cst.DictComp:
                self.expr(node.key)
                elt_node = node.value
            else:
                elt_node = node.elt
            elt = self.expr(elt_node)
        finally:
            self.st = saved
        if self._h_coll and not self.quiet:
            site = CollectionUpdate(node, elt, elt_node)
            for r in self._h_coll:
                r.on_collection(self, site)
        if self.is_collection_update(elt, elt_node):
            return NEW_WEIGHTS  # reported here; downstream these are weights, not gradients
        # a list of tuples keeps the tuple's positions for zip(*...) (see Calls._call_function)
        return Value(elt.taint, elt.weight_ref, elt.weight_derived, (elt,) if elt.elems else None)

    def is_collection_update(self, elt: Value, elt_node: cst.BaseExpression | None) -> bool:
        if type(elt_node) is cst.Tuple and elt.elems is not None and len(elt.elems) == len(elt_node.elements):
            # OrderedDict((name, p - lr * g) for ...), [(w - lr * dw, b - lr * db) for ...]
            return any(self.is_collection_update(v, e.value) for v, e in zip(elt.elems, elt_node.elements))
        return (
            elt.taint
            and (elt.weight_ref or elt.weight_derived)
            and (elt_node is None or self.is_update_expr(elt_node))
        )

    def _args(self, args: Sequence[cst.Arg]) -> list[Value]:
        return [self.expr(a.value) for a in args]
