"""Calls: in-place writes, duality maps, sources, sanitizers, summaries, iteration."""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from ..names import is_grad_name, is_inplace_method, is_weight_name
from . import maps
from .ops import MAXIMA, data_args, inplace_map, method_map, written_value
from .paths import dotted, key_of
from .sites import AssignSite, CollectionUpdate, InplaceCall
from .tables import (
    CLEAN_BUILTINS,
    CONSTRUCTORS,
    FLAG_METHODS,
    CONTAINER_WRITES,
    ELEMENT_PRESERVING,
    GRAD_FUNCTIONS,
    GRAD_TRANSFORMS,
    META_KWARGS,
    SCALAR_METHODS,
    VIEW_METHODS,
)
from .values import (
    CLEAN,
    combine as _combine,
    INVNORM,
    INVROOT,
    join as _join,
    MOMENT2,
    NEW_WEIGHTS,
    NORMV,
    PRECOND,
    PRIMAL_VALUE,
    SQUARE,
    TAINT,
    Value,
    WEIGHT,
)


# in-place writes that accumulate what they write into the buffer (a running sum, average or maximum)
ACCUMULATES = frozenset(("add_", "addcmul_", "lerp_")) | MAXIMA


class Calls:
    """Part of :class:`dualtype_lint.dataflow.Analyzer`."""

    def _e_call(self, node: cst.Call) -> Value:
        func = node.func
        args = node.args
        ft = type(func)
        d = dotted(func)
        resolved = self.resolve_dotted(d) if d is not None else None
        last = resolved.rsplit(".", 1)[-1] if resolved else None
        if last is None and ft is cst.Attribute:  # norms[name].dualize(g), f().method(x)
            if func.attr.value in self.dualizers.bare:
                self.expr(func.value)
                self._args(args)
                return PRIMAL_VALUE
        is_module_func = False
        if resolved is not None and ft is cst.Attribute:
            head = resolved.split(".", 1)[0]
            is_module_func = d.split(".", 1)[0] in self.imports or head in (
                "torch",
                "math",
                "F",
                "np",
            )
        v = self._call_write(node, func, ft, args, last, is_module_func)
        if v is None:
            v = self._call_known(node, func, ft, args, resolved, last, is_module_func)
        if v is None:
            if ft is cst.Attribute and not is_module_func:
                v = self._call_method(node, func, args)
            else:
                v = self._call_function(node, func, ft, args, resolved, last)
        return v

    def _call_write(self, node, func, ft, args, last, is_module_func) -> Value | None:
        """In-place writes: ``t.add_(x)``, ``torch._foreach_add_(ts, xs)``, ``out=t``, ..."""
        out_arg = None
        for a in args:
            if a.keyword is not None and a.keyword.value == "out":
                out_arg = a
                break
        if last is not None and last.startswith("_foreach_") and last.endswith("_") and args:
            if ft is cst.Attribute and not is_module_func:
                self.expr(func.value)
            return self._inplace(node, "foreach", last, args[0].value, args[1:])
        if ft is cst.Attribute and not is_module_func and func.attr.value in FLAG_METHODS:
            recv = self.expr(func.value)
            self._args(args)
            return recv  # `w.requires_grad_(flag)` writes no data into w
        if ft is cst.Attribute and not is_module_func and is_inplace_method(func.attr.value):
            outer = self.chain is None
            if outer:  # p.add_(g).mul_(z).add_(buf): one update site, reported once per rule
                self.chain = node
            try:
                recv = self.expr(func.value)
            finally:
                if outer:
                    self.chain = None
            target = func.value
            while (  # v.mul_(β).add_(x) and v.view(-1).add_(x) write into v
                type(target) is cst.Call
                and type(target.func) is cst.Attribute
                and (is_inplace_method(target.func.attr.value) or target.func.attr.value in VIEW_METHODS)
            ):
                target = target.func.value
            return self._inplace(node, "method", func.attr.value, target, args, recv)
        if last is not None and maps.is_norm_name(last):
            # clip_grad_norm_(...), vector_norm(g), total_norm(...): a magnitude
            vals = [self.expr(func.value)] if ft is cst.Attribute and not is_module_func else []
            return maps.norm_of(vals + self._args(args), last)
        if is_module_func and last is not None and is_inplace_method(last) and args:
            # torch.relu_(x), nn.init.zeros_(w): the first argument is written
            return self._inplace(node, "function", last, args[0].value, args[1:])
        if out_arg is not None:
            if ft is cst.Attribute:
                self.expr(func.value)
            others = [a for a in args if a is not out_arg]
            return self._inplace(node, "out", last or "out", out_arg.value, others)
        if last == "vector_to_parameters" and len(args) >= 2:
            return self._inplace(node, "function", last, args[1].value, [args[0]])
        return None

    def _call_known(self, node, func, ft, args, resolved, last, is_module_func) -> Value | None:
        """Sanitizers, sources, duality maps, scalars, constructors."""
        if resolved is not None and resolved in self.dualizers:
            self._args(args)
            return PRIMAL_VALUE
        if ft is cst.Call:  # torch.func.grad(f)(x)
            inner = self.resolve(func.func)
            self.expr(func)
            self._args(args)
            if inner in GRAD_TRANSFORMS:
                return TAINT
            return _combine(())
        if resolved in GRAD_FUNCTIONS or (last == "grad" and not args):
            self._args(args)
            self.grad_fns.update(map(id, self.fn_nodes))
            return TAINT
        if last is None:
            return None
        if last in CONSTRUCTORS:
            if ft is cst.Attribute and not is_module_func:
                self.expr(func.value)
            self._args(args)
            return CLEAN
        if resolved == "setattr" and len(args) == 3 and not any(a.keyword or a.star for a in args):
            return self._setattr(node, args)
        if resolved in CLEAN_BUILTINS or (
            is_module_func and (resolved.startswith("math.") or last.startswith("is_"))
        ):
            self._args(args)
            if ft is cst.Attribute and not is_module_func:
                self.expr(func.value)
            return CLEAN
        if resolved in ("map", "jax.tree.map") or last in ("tree_map", "tree_map_only", "tree_multimap"):
            # map(f, params, grads); torch.utils._pytree / optree / jax tree_map(f, *trees)
            return self._map(node, skip=1 if last == "tree_map_only" else 0)
        if is_module_func and args:
            return self._module_map(last, args)
        return None

    def _module_map(self, last: str, args) -> Value | None:
        """``torch.sign(g)``, ``torch.sqrt(v)``, ``torch.div(a, b)``, ``torch.linalg.svd(g)``,
        ``F.normalize(g)``: duality maps and the pieces of preconditioners (see analysis.maps)."""
        if last in maps.SIGN or last in maps.NORMALIZERS:
            self._args(args)
            return PRIMAL_VALUE
        if last in maps.ROOTS or last in maps.INV_ROOTS or last in maps.SVDS or last in maps.QRS or last in maps.EIGHS:
            vals = self._argvals(args)
            v = vals[0] if vals else CLEAN
            if last in maps.SVDS:
                return maps.svd_of(v)
            if last in maps.QRS:
                return maps.qr_of(v)
            if last in maps.EIGHS:
                return maps.eigh_of(v)
            return maps.root_of(v) if last in maps.ROOTS else maps.rsqrt_of(v)
        if last in maps.REDUCTIONS:
            vals = self._argvals(args)
            return maps.reduce_of(vals[0], len(vals) > 1) if vals else CLEAN
        if last in maps.SQUARES:
            vals = self._argvals(args)
            return maps.power(vals[0], 2.0) if vals else CLEAN
        if last in maps.ABS or last in maps.RECIPROCALS:
            vals = self._argvals(args)
            f = maps.abs_of if last in maps.ABS else maps.reciprocal_of
            return f(vals[0]) if vals else CLEAN
        if last in maps.CLAMPS:
            vals = self._argvals(args)
            return self._clamp_args(args, vals) if len(vals) > 1 else _combine(vals)
        if last == "where" and len(args) == 3 and all(a.keyword is None for a in args):
            self.expr(args[0].value)
            x, y = (self.expr(a.value) for a in args[1:])
            if _sometimes_one(x, args[2].value) or _sometimes_one(y, args[1].value):
                return CLEAN  # where(ρ > 5, lr/√v, 1.0): on one path the factor is 1, the update raw
            return _join((x, y))
        if last in maps.ATAN2:
            vals = self._argvals(args)
            return maps.atan2(vals[0], vals[1]) if len(vals) >= 2 else _combine(vals)
        if last in maps.DIVIDES or last in maps.MULTIPLIES or last == "pow":
            vals = self._argvals(args)
            if len(vals) < 2:
                return _combine(vals)
            if last == "pow":
                return maps.power(vals[0], maps.exponent(args[1].value))
            f = maps.divide if last in maps.DIVIDES else maps.multiply
            return f(vals[0], vals[1])
        return None

    def _known_callee(self, node: cst.Call, func, args, name: str | None) -> tuple[Value | None, list]:
        """(the call's value, None) for an orthogonalizer by name or a summarized function;
        else (None, the values of its data arguments)."""
        if name is not None and maps.looks_like_orthogonalizer(name) and not self.summaries.returns_input(self, func):
            # trusted by its name, unless its body can hand its input back unchanged (a bypass
            # for vectors: then the summary says which path is raw)
            self._args(args)
            return PRIMAL_VALUE, []
        s = self.summaries.call(self, node, func, args)
        if isinstance(s, Value):
            return s, []
        return None, (self._argvals(args) if s is None else data_args(args, s))

    def _call_method(self, node: cst.Call, func: cst.Attribute, args) -> Value:
        mname = func.attr.value
        recv = self.expr(func.value)
        done, vals = self._known_callee(node, func, args, mname)  # self._orthogonalize(g), ...
        if done is not None:
            return done
        if mname in SCALAR_METHODS:
            return CLEAN
        if mname in maps.REDUCTIONS:
            return maps.reduce_of(recv, bool(vals))
        m = method_map(mname, recv, vals, args)
        if m is not None:
            return m
        if mname in VIEW_METHODS:
            return _join((recv, _combine(vals))) if any(v.taint for v in vals) else recv
        if mname == "get" and args and type(args[0].value) is cst.SimpleString:
            k = key_of(func.value)
            s = args[0].value.value
            if k is not None and s[:1] in "'\"":
                kk = f"{k}[{s[1:-1]!r}]"
                if kk in self.st.tainted or is_grad_name(s[1:-1]):
                    return TAINT
                if is_weight_name(s[1:-1]):
                    return WEIGHT
        if mname in ("parameters", "named_parameters", "weights"):  # weights(): DARTS' own accessor
            return WEIGHT
        if mname in ("items", "values", "copy"):
            return Value(recv.taint, recv.weight_ref, recv.weight_derived, None, recv.flags)
        if mname == "keys":
            return CLEAN
        if mname == "grad" and not vals:  # modula: weights.grad()
            return TAINT
        if mname in ("append", "appendleft", "insert") and vals and args and self.is_collection_update(vals[-1], args[-1].value):
            # new_ws.append(w - lr * g) in a loop over zip(ws, grads): a comprehension unrolled
            if self._h_coll and not self.quiet:
                site = CollectionUpdate(node, vals[-1], args[-1].value)
                for r in self._h_coll:
                    r.on_collection(self, site)
            return recv
        if mname in CONTAINER_WRITES and any(v.taint for v in vals):
            self.taint_target(func.value)  # grads.append(p.grad)
            self.summaries.record_write(self, func.value, _join(vals), False)
        return _combine([recv, *vals])

    def _call_function(self, node, func, ft, args, resolved, last) -> Value:
        if resolved in ("zip", "enumerate") and ft is cst.Name:
            if resolved == "zip" and len(args) == 1 and args[0].star == "*":
                # y, grad, z = zip(*[(p, p.grad, state[p]['z']) for p in ps]): the transpose of
                # a list of tuples is a tuple of lists, one per position
                rows = self.expr(args[0].value)
                row = rows.elems[0] if rows.elems and len(rows.elems) == 1 else None
                if row is not None and row.elems:
                    cols = tuple(Value(c.taint, c.weight_ref, c.weight_derived) for c in row.elems)
                    return Value(rows.taint, rows.weight_ref, rows.weight_derived, cols)
                return Value(rows.taint, rows.weight_ref, rows.weight_derived)
            # zipped = zip(groups, grads): a collection of tuples, kept per position for the
            # loop that iterates it later (for group, grads in zipped)
            e = self.elem_of(node)
            return Value(e.taint, e.weight_ref, e.weight_derived, (e,))
        if ft is not cst.Name:
            self.expr(func)
        done, vals = self._known_callee(node, func, args, last)
        if done is not None:
            return done
        if resolved in ("zip", "enumerate", "max", "min", "sum", "list", "tuple", "reversed", "sorted"):
            if resolved in ("max", "min") and len(vals) > 1:
                return self._clamp_args(args, vals)
            if resolved == "sum" and any(v.flags & NORMV for v in vals):
                return maps.norm_of(vals)
            return _join(vals)
        return _combine(vals)

    def _setattr(self, node: cst.Call, args) -> Value:
        """``setattr(module, name, w - lr * g)``: new weights stored under a dynamic name are a
        reassignment of a weight (DTL003); in a helper (``set_param(mod, name, tmp)``), reported
        at the caller that passes new weights."""
        obj, _, value = (self.expr(a.value) for a in args)
        if value.taint and value.weight_derived:
            self.fire_assign(AssignSite(node, node, args[2].value, value, True))
        if value.taint:
            self.summaries.record_setattr(self, args[0].value, value)
        return CLEAN

    def _clamp_args(self, args: Sequence[cst.Arg], vals: list[Value]) -> Value:
        """``min(c / ‖g‖, 1.0)``, ``torch.clamp(n, min=1)``: a norm among the arguments,
        clamped by the others (see :func:`maps.clamped`)."""
        for k, v in enumerate(vals):
            if v.flags & (NORMV | INVNORM) and k < len(args):
                norm = maps.norm_of(vals) if v.flags & NORMV else _join(vals)
                return maps.clamped(norm, [a.value for i, a in enumerate(args) if i != k])
        return _join(vals)

    def _argvals(self, args: Sequence[cst.Arg]) -> list[Value]:
        """Values of the arguments that carry data: metadata keywords (``device=``,
        ``dtype=``, ``device_mesh=``, ``placements=``, ...) are evaluated but do not count."""
        out = []
        for a in args:
            v = self.expr(a.value)
            if a.keyword is None or a.keyword.value not in META_KWARGS:
                out.append(v)
        return out

    def _inplace(
        self,
        node: cst.Call,
        kind: str,
        name: str,
        target: cst.BaseExpression,
        value_args: Sequence[cst.Arg],
        recv: Value | None = None,
    ) -> Value:
        tv = self.expr(target) if recv is None else recv
        vals: list[Value] = []
        tainted: list[cst.BaseExpression] = []
        fixable: list[cst.BaseExpression] = []
        base = name[9:] if name.startswith("_foreach_") else name
        deprecated_scale = False  # p.add_(value, t): p + value * t
        if kind == "method" and base in ("addcdiv_", "addcmul_") and len(value_args) == 3:
            if all(a.keyword is None for a in value_args):  # deprecated p.addcdiv_(value, t1, t2)
                value_args = [value_args[1], value_args[2], value_args[0]]
        elif kind == "method" and base in ("add_", "sub_") and len(value_args) == 2:
            deprecated_scale = all(a.keyword is None for a in value_args)
        for i, a in enumerate(value_args):
            v = self.expr(a.value)
            if a.keyword is not None and a.keyword.value in META_KWARGS:
                continue
            vals.append(v)
            if v.taint:
                tainted.append(a.value)
                # scalars (alpha=, value=) and the denominator of addcdiv are never dualized
                if a.keyword is None and not (base == "addcdiv_" and i == 1):
                    fixable.append(a.value)
        is_weight = self.is_weight_target(target)
        if not is_weight:
            new = inplace_map(base, tv, vals, value_args)
            if new is not None:
                self._set_target(target, new)
                if new.taint:
                    self.summaries.record_write(self, target, new, False)
                return new
        if not tainted:
            if not is_weight and _running_statistic(base, node, written_value(base, vals)):
                # v.mul_(β).add_(‖g‖²), u.lerp_(n, 1-β): a running average of squared norms
                # (NovoGrad per tensor, Nero per row) is a second moment, as Adam's is
                self._set_target(target, Value(flags=MOMENT2))
                return Value(flags=MOMENT2)
            return WEIGHT if is_weight else (recv if recv is not None else CLEAN)
        written = maps.multiply(vals[0], vals[1]) if deprecated_scale else written_value(base, vals)
        if not written.taint:
            return WEIGHT if is_weight else CLEAN  # p.add_(R, v) with R = r / ‖v‖: normalized
        self.fire_inplace(
            InplaceCall(node, kind, name, target, is_weight, tuple(tainted), written.precond, tuple(fixable))
        )
        self.summaries.record_write(self, target, written, is_weight)
        if is_weight:
            return WEIGHT
        self.taint_target(target)
        if written.precond:
            self._set_target(target, Value(True, flags=written.flags))
        elif written.flags & (SQUARE | MOMENT2) and base in ACCUMULATES:
            # v.mul_(β).addcmul_(g, g): a buffer that squared gradients accumulate into is a
            # second moment (whatever it held before: its flags were lost at the last write)
            self._set_target(target, Value(True, flags=MOMENT2))
            return Value(True, flags=MOMENT2)
        return Value(True, flags=written.flags if written.precond else 0)

    def _set_target(self, target: cst.BaseExpression, v: Value) -> None:
        """A strong update of a buffer by an in-place map (``u.sign_()``, ``u.div_(n)``)."""
        k = key_of(target)
        if k is not None and not k.endswith("[*]"):
            self._set_key(k, v)

    def _map(self, node: cst.Call, skip: int = 0) -> Value:
        args = [a for a in node.args if a.keyword is None][skip:]
        for a in node.args:
            if a.keyword is not None:
                self.expr(a.value)
        if not args:
            return CLEAN
        fn = args[0].value
        iters = [self.elem_of(a.value) for a in args[1:]]
        if type(fn) is cst.Lambda:
            saved = self.st
            self.st = saved.copy()
            try:
                params = [p.name for p in fn.params.params]
                for i, p in enumerate(params):
                    self._bind(p, iters[i] if i < len(iters) else CLEAN, None)
                elt = self.expr(fn.body)
            finally:
                self.st = saved
            fix_expr = fn.body
        else:
            r = self.resolve(fn)
            if r is not None and r in self.dualizers:
                return CLEAN
            self.expr(fn)
            elt = _combine(iters)
            fix_expr = None
        if self._h_coll and not self.quiet:
            site = CollectionUpdate(node, elt, fix_expr)
            for r in self._h_coll:
                r.on_collection(self, site)
        if self.is_collection_update(elt, fix_expr):
            return NEW_WEIGHTS
        return Value(elt.taint, False, elt.weight_ref or elt.weight_derived)

    def elem_of(self, it: cst.BaseExpression) -> Value:
        """The value of one element when iterating over ``it``."""
        if type(it) is cst.Call:
            r = self.resolve(it.func)
            args = it.args
            if r == "zip":
                for a in args:
                    if a.keyword is not None:  # strict=True
                        self.expr(a.value)
                if any(a.star for a in args):  # zip(*lists): no per-position structure
                    return _join(self.elem_of(a.value) for a in args)
                elems = tuple(self.elem_of(a.value) for a in args if a.keyword is None)
                j = _join(elems)
                return Value(j.taint, j.weight_ref, j.weight_derived, elems)
            if r == "enumerate" and args:
                e = self.elem_of(args[0].value)
                for a in args[1:]:
                    self.expr(a.value)
                return Value(e.taint, e.weight_ref, e.weight_derived, (CLEAN, e))
            if r in ELEMENT_PRESERVING and len(args) == 1:
                return self.elem_of(args[0].value)
            if r == "filter" and len(args) == 2:
                self.expr(args[0].value)
                return self.elem_of(args[1].value)
            if r == "range":
                self._args(args)
                return CLEAN
            if type(it.func) is cst.Attribute:
                m = it.func.attr.value
                if m in ("parameters", "weights"):
                    self.expr(it.func.value)
                    self._args(args)
                    return WEIGHT
                if m in ("named_parameters", "items"):
                    recv = self.expr(it.func.value)
                    self._args(args)
                    e = WEIGHT if m == "named_parameters" else recv
                    return Value(e.taint, e.weight_ref, False, (CLEAN, e))
        v = self.expr(it)
        if v.elems is None:
            return v
        if not v.elems:
            return CLEAN
        first = v.elems[0]
        if all((e.taint, e.weight_ref) == (first.taint, first.weight_ref) for e in v.elems):
            return first
        # a literal mixing weights and non-weights: an element is not known to be a weight
        return Value(v.taint, False, False)


def _running_statistic(base: str, node: cst.Call, written: Value) -> bool:
    """Does this in-place write keep a running statistic of gradient magnitudes in a buffer?
    A decayed average of norms (``v.mul_(β).add_(n)``, ``v.lerp_(n, 1 - β)``) or a running
    maximum of a statistic (``torch.max(m, v, out=m)``). A plain sum of norms
    (``total.add_(n ** 2)``, the global norm of clipping) is not one: it stays a norm."""
    if written.taint:
        return False
    if base in MAXIMA:
        return bool(written.flags & MOMENT2)
    recv = node.func.value if type(node.func) is cst.Attribute else None  # v.mul_(β) in v.mul_(β).add_(n)
    decayed = base == "lerp_" or (
        base in ("add_", "addcmul_")
        and type(recv) is cst.Call
        and type(recv.func) is cst.Attribute
        and recv.func.attr.value == "mul_"
    )
    return decayed and bool(written.flags & (NORMV | MOMENT2))


def _sometimes_one(factor: Value, other: cst.BaseExpression) -> bool:
    """A preconditioner factor (1/√v) chosen against a number: the other path scales by it."""
    return factor.taint and bool(factor.flags & (PRECOND | INVROOT)) and maps.float_literal(other) is not None
