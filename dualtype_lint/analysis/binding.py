"""Binding: assignments and unpacking, weights as targets, buffers that become gradients."""

from __future__ import annotations

import libcst as cst

from .. import names as _names
from ..names import is_grad_name, is_weight_name
from .ops import is_copy, names_in, writes_back
from .paths import string_index, key_of
from .sites import AssignSite
from .tables import FN_EXPRS, VIEW_ATTRS, VIEW_METHODS
from .values import CLEAN, join as _join, MOMENT2, NORMV, SQUARE, TAINT, Value, WEIGHT


class Binding:
    """Part of :class:`dualtype_lint.dataflow.Analyzer`."""

    def is_weight_target(self, node: cst.BaseExpression) -> bool:
        """Does writing into ``node`` change a weight?"""
        t = type(node)
        if t is cst.Name:
            n = node.value
            st = self.st
            # a copy of weights (fp32 master copy, stacked chunk) that is updated is a weight
            return n in st.weights or is_weight_name(n)
        if t is cst.Attribute:
            attr = node.attr.value
            if attr == "grad" or is_grad_name(attr):
                return False
            if attr in VIEW_ATTRS:
                return self.is_weight_target(node.value)
            k = key_of(node)
            return is_weight_name(attr) or (k is not None and k in self.st.weights)
        if t is cst.Subscript:
            s = string_index(node)
            if s is not None:
                return is_weight_name(s)
            k = key_of(node)
            return (k is not None and k in self.st.weights) or self.is_weight_target(node.value)
        if t is cst.Call and type(node.func) is cst.Attribute:
            if node.func.attr.value == "parameters":
                return True
            if node.func.attr.value in VIEW_METHODS:
                return self.is_weight_target(node.func.value)
        return False

    def _copies_a_weight(self, call: cst.Call) -> bool:
        """Is what ``p.clone()`` / ``torch.clone(p)`` copies a weight itself (not
        ``v.type_as(p)``, a buffer cast like a weight)?"""
        f = call.func
        module_fn = type(f.value) is cst.Name and f.value.value in self.imports
        src = (call.args[0].value if call.args else None) if module_fn else f.value
        return src is not None and self.expr(src).weight_ref

    def _writes_back(self, fn: cst.FunctionDef) -> frozenset[str]:
        k = id(fn)
        if k not in self._write_back:
            self._write_back[k] = writes_back(fn)
        return self._write_back[k]

    def _set_key(self, k: str, v: Value, strong: bool = True) -> None:
        st = self.st
        if v.flags:
            st.flags[k] = v.flags
        elif strong:
            st.flags.pop(k, None)
        if v.elems is not None:
            st.elems[k] = v.elems
        elif strong:
            st.elems.pop(k, None)
        if v.taint:
            st.tainted.add(k)
        elif strong and st.tainted:
            st.tainted.discard(k)
            if any(t.startswith(k) for t in st.tainted):
                pre1, pre2 = k + ".", k + "["
                st.tainted = {t for t in st.tainted if not (t.startswith(pre1) or t.startswith(pre2))}
        if v.weight_ref:
            st.weights.add(k)
        elif strong:
            st.weights.discard(k)
        if v.weight_derived:
            st.derived.add(k)
        elif strong:
            st.derived.discard(k)

    def taint_target(self, node: cst.BaseExpression, suffix: str = "") -> None:
        """A raw gradient was written into ``node`` (or its part ``suffix``, e.g.
        ``['GG']``): it is a buffer now (a source)."""
        self.taint_writes += 1  # reads st.aliases (see Statements._walk_again_same)
        k = key_of(node)
        if k is None:
            return
        k += suffix
        st = self.st
        st.tainted.add(k)
        st.flags.pop(k, None)
        a = st.aliases.get(k)
        if a is not None:
            st.tainted.add(a)
            st.flags.pop(a, None)
        for name, path in st.aliases.items():
            if path == k:
                st.tainted.add(name)
                st.flags.pop(name, None)
        # an element of a list written: the list holds a gradient now
        while k.endswith("]") and not k.endswith("']"):
            k = k[: k.rindex("[")]
            st.tainted.add(k)

    def _bind(self, target: cst.BaseExpression, v: Value, value_node) -> None:
        t = type(target)
        st = self.st
        if t is cst.Name:
            n = target.value
            st.bound.add(n)
            self._set_key(n, v)
            if value_node is not None and type(value_node) in (cst.Name, cst.Attribute, cst.Subscript):
                k = key_of(value_node)
                if k is not None and k != n:
                    st.aliases[n] = k
                    return
            st.aliases.pop(n, None)
        elif t is cst.Attribute or t is cst.Subscript:
            if t is cst.Subscript:
                for el in target.slice:
                    if type(el.slice) is cst.Index:
                        self.expr(el.slice.value)
            k = key_of(target)
            if k is None:
                return
            if k.endswith("[*]"):
                if v.taint:
                    self.taint_target(target)
            else:
                self._set_key(k, v)
        elif t is cst.Tuple or t is cst.List:
            elts = target.elements
            starred = any(type(e) is cst.StarredElement for e in elts)
            if v.elems is not None and len(v.elems) == len(elts) and not starred:
                vals_nodes = (
                    [e.value for e in value_node.elements]
                    if type(value_node) in (cst.Tuple, cst.List) and len(value_node.elements) == len(elts)
                    else [None] * len(elts)
                )
                for e, ev, vn in zip(elts, v.elems, vals_nodes):
                    self._bind(e.value, ev, vn)
                return
            if (
                v.elems is not None
                and type(value_node) in (cst.Tuple, cst.List)
                and len(v.elems) == len(value_node.elements)
            ):
                self._bind_starred(elts, value_node.elements, v.elems)
                return
            # Unpacking an aggregate of unknown shape: if it mixes weights and gradients
            # (torch's grouped tensors), trust the names of the targets.
            mixed = v.taint and (v.weight_ref or v.weight_derived)
            for e in elts:
                sub = e.value
                ev = v
                if mixed:
                    if type(sub) is cst.Name:
                        n = sub.value
                        ev = WEIGHT if is_weight_name(n) else TAINT if is_grad_name(n) else CLEAN
                    else:
                        ev = v
                elif v.taint:
                    ev = TAINT
                elif not v.flags and type(sub) is cst.Name and is_grad_name(sub.value) and _computed(value_node):
                    # fut, g_slice = self._futures[p]: a target named as a gradient, unpacked from
                    # something computed, is one (as `g_slice = ...` alone would be)
                    ev = TAINT
                self._bind(sub, ev, None)
        elif t is cst.StarredElement:
            self._bind(target.value, v, None)
        else:
            self.expr(target)

    def _mentions_clean_grad_name(self, node: cst.CSTNode) -> bool:
        """``grad = torch.tensordot(grad, q)`` transforms a value whose kind is known (here:
        not a gradient); only a fresh computation (``grad_w1 = x.t().mm(h)``) is a hand gradient."""
        stack = [node]
        while stack:
            n = stack.pop()
            if type(n) is cst.Name:
                if is_grad_name(n.value) and n.value not in self.st.tainted:
                    return True
            elif type(n) is cst.Attribute:
                stack.append(n.value)
            else:
                stack.extend(n.children)
        return False

    def _bind_starred(self, targets, values, vals: tuple[Value, ...]) -> None:
        """``grad, lr, *betas = p.grad, group["lr"], *group["betas"]``: positions before and
        after the starred parts pair up one to one; the rest gets the join of the rest."""
        star_t = lambda e: type(e) is cst.StarredElement  # noqa: E731
        i = 0
        while i < len(targets) and i < len(values) and not star_t(targets[i]) and not star_t(values[i]):
            self._bind(targets[i].value, vals[i], values[i].value)
            i += 1
        j = 0
        while (
            j < len(targets) - i
            and j < len(values) - i
            and not star_t(targets[-1 - j])
            and not star_t(values[-1 - j])
        ):
            self._bind(targets[-1 - j].value, vals[-1 - j], values[-1 - j].value)
            j += 1
        rest = _join(vals[i : len(vals) - j])
        for e in targets[i : len(targets) - j]:
            self._bind(e.value, rest, None)

    def _assign(
        self, stmt: cst.CSTNode, target: cst.BaseExpression, value_node: cst.BaseExpression, v: Value
    ) -> None:
        tt = type(target)
        if type(value_node) in FN_EXPRS:
            self.summaries.bind_alias(self, target, value_node)
        if tt is cst.Name and not v.taint and (v.weight_ref or v.weight_derived) and is_copy(value_node):
            if not self.fn_nodes or target.value in self._writes_back(self.fn_nodes[-1]):
                v = WEIGHT  # p_fp32 = p.float(), chunk = torch.stack(params): a master copy of weights
        elif tt is cst.Subscript and not v.taint and is_copy(value_node) and self._copies_a_weight(value_node):
            v = WEIGHT  # state[p]['z'] = torch.clone(p): a weight iterate kept in the state (schedule-free)
            k = key_of(target)
            root = k.split("[", 1)[0] if k is not None else None
            if root in self.st.aliases:  # state = self.state[p]; state['z'] = ...: self.state[*]['z']
                self.st.weights.add(self.st.aliases[root] + k[len(root):])
        if tt is cst.Name and v.taint and v.flags & SQUARE and any(x.value == target.value for x in names_in(value_node)):
            # v = β * v + (1 - β) * g * g: a running second moment
            v = Value(True, v.weight_ref, v.weight_derived, v.elems, v.flags | MOMENT2)
        if tt is cst.Name and not v.taint and v.flags == NORMV and is_grad_name(target.value) and _sum_of(value_node):
            v = TAINT  # grad_a = grad_y_pred.sum(): the gradient of a scalar weight, not a norm
        if (
            tt is cst.Name
            and not v.taint
            and _names.is_hand_grad_target(target.value, v, value_node, self._paired_grad(target.value, value_node))
            and not self._mentions_clean_grad_name(value_node)
        ):
            v = Value(True, v.weight_ref, v.weight_derived, v.elems)  # grad_w1 = x.t().mm(grad_h)
            if self._hand_grad(target.value):  # db1 = ...: b1 is a weight
                n = target.value
                self.st.weights.add(n[2:] if n[1] == "_" else n[1:])
        if tt is cst.Name and type(value_node) is cst.Call:
            fn = self._callee_name(value_node.func) if v.taint else None
            if fn is not None:
                self._call_origin[target.value] = fn
            else:
                self._call_origin.pop(target.value, None)
        if v.taint and tt is cst.Attribute and target.attr.value not in VIEW_ATTRS and self.is_weight_target(target.value):
            # learn2learn's p.update = -lr * g: a gradient carried on the weight to where it is
            # applied (`p + p.update` in update_module)
            self.carried.add(target.attr.value)
        if v.taint and tt in (cst.Name, cst.Attribute) and _steps_itself(target, value_node):
            # ctx.task_context = ctx.task_context - lr * grads[k]: what steps against a gradient
            # from itself is a weight (CAVIA's context parameters, differentiated like weights)
            self.st.weights.add(key_of(target))
        if v.taint and tt in (cst.Name, cst.Attribute, cst.Subscript):
            if tt is not cst.Name:
                self.summaries.record_write(self, target, v, self.is_weight_target(target))
            is_weight = self.is_weight_target(target)
            if self._h_assign and not self.quiet:
                site = AssignSite(stmt, target, value_node, v, is_weight)
                for r in self._h_assign:
                    r.on_assign(self, site)
            if is_weight and (tt is not cst.Name or v.weight_ref or v.weight_derived):
                # A weight updated with a raw gradient is reported there; it is still a
                # weight afterwards, not a gradient buffer (params = [p - lr*g ...]).
                v = WEIGHT
        self._bind(target, v, value_node)

    def _bind_params(self, params: cst.Parameters) -> None:
        st = self.st
        allp = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
        for extra in (params.star_arg, params.star_kwarg):
            if isinstance(extra, cst.Param):
                allp.append(extra)
        for p in allp:
            n = p.name.value
            st.bound.add(n)
            st.aliases.pop(n, None)
            st.weights.discard(n)
            if is_grad_name(n):
                st.tainted.add(n)
            else:
                st.tainted.discard(n)


def _computed(node) -> bool:
    """Not a literal or a bare name: a call, a subscript, an attribute (unknown contents)."""
    return node is not None and type(node) in (cst.Call, cst.Subscript, cst.Attribute, cst.Await)


def _sum_of(node) -> bool:
    """``x.sum()``, ``torch.sum(x)``, ``x.mean()``: a full reduction."""
    return (
        type(node) is cst.Call
        and type(node.func) is cst.Attribute
        and node.func.attr.value in ("sum", "mean")
    )


def _steps_itself(target: cst.BaseExpression, value) -> bool:
    """``x = x - c * g`` for a target not named as a buffer or a gradient (``buf``, ``m``...)."""
    if type(value) is not cst.BinaryOperation or type(value.operator) is not cst.Subtract:
        return False
    if type(value.right) is not cst.BinaryOperation or type(value.right.operator) is not cst.Multiply:
        return False
    k = key_of(target)
    if k is None or k != key_of(value.left):
        return False
    last = k.rsplit(".", 1)[-1]
    return not is_grad_name(last) and not any(w in _names.NOT_WEIGHT_WORDS for w in last.lower().split("_"))
