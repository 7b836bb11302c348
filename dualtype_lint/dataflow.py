"""Intra-procedural taint analysis over a libcst tree, in one walk.

Abstract values
    Every expression evaluates to a :class:`Value`: does it carry a raw gradient (``taint``),
    is it a reference to a weight or a list of weights (``weight_ref``: ``p``, ``p.data``,
    ``params[i]``, ``group["params"]``), is it computed from a weight (``weight_derived``:
    ``p - lr * g``), and, for tuples and ``zip``, the values of its elements.

Sources
    ``x.grad`` (and anything reached from it: ``.data``, arithmetic, method calls),
    ``torch.autograd.grad(...)`` and ``torch.func.grad(f)(...)`` results, function parameters
    and free names that are named like gradients (``grads``, ``d_p_list``, ``device_grads``),
    and *buffers*: any non-weight that a raw gradient is written into (``buf.mul_(m).add_(g)``,
    ``buf += g``, ``torch._foreach_lerp_(exp_avgs, grads, w)``) becomes a source itself.

Sanitizers
    Calls of ``dualize`` (bare, ``dualtype.dualize``, ``dt.dualize``, ``norm.dualize``, any
    import alias) and of configured dualizers. Scalars computed from a gradient (``g.norm()``,
    ``.item()``, ``torch.linalg.vector_norm``) are clean too: scaling an update by ``‖g‖†`` is
    exactly what steepest descent does.

Sinks
    Writes into weights. The analyzer finds the update sites and hands them to the rules
    (:mod:`dualtype_lint.rules`), which decide what to report.

Control flow
    A may-analysis: branches of ``if``/``try``/``match`` are walked from the same state and
    joined by union; loop bodies are walked until the state stops growing (at most four
    times), so a buffer tainted late in an iteration is seen at the top of the next. Nested
    functions start from a copy of the enclosing state (closures read it). Assignment to a
    plain name is a strong update (``g = dualize(g)`` cleans ``g``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import libcst as cst

from . import names as _names
from .analysis import maps
from .analysis.summaries import Summaries
from .analysis.sites import AssignSite, AugAssignSite, CollectionUpdate, InplaceCall
from .analysis.values import (
    CLEAN,
    NEW_WEIGHTS,
    NORMV,
    PRIMAL,
    PRIMAL_VALUE,
    TAINT,
    WEIGHT,
    State,
    Value,
    combine as _combine,
    join as _join,
)
from .names import is_grad_name, is_inplace_method, is_weight_name

if TYPE_CHECKING:
    from .rules.base import Rule

# ----------------------------------------------------------------------------- tables

CLEAN_ATTRS = frozenset(
    """shape dtype device ndim is_leaf requires_grad is_sparse is_cuda layout names grad_fn
    itemsize nbytes is_meta is_quantized is_cpu is_mps stride strides sizes numel""".split()
)
# Calls whose result is ``a ± b``-like: an out-of-place update when a weight and a gradient meet.
UPDATE_CALLS = frozenset(
    """add sub subtract addcdiv addcmul lerp Parameter _foreach_add _foreach_sub
    _foreach_addcdiv _foreach_addcmul _foreach_lerp""".split()
)
VIEW_ATTRS = frozenset("data T mT H mH real imag _local_tensor".split())
VIEW_METHODS = frozenset(
    """detach view view_as reshape reshape_as flatten narrow select t transpose squeeze
    unsqueeze to_local as_strided unflatten movedim permute expand expand_as""".split()
)
SCALAR_METHODS = frozenset(
    """item numel nelement dim size tolist stride element_size data_ptr storage_offset
    is_contiguous is_floating_point is_complex get_device dual_value isfinite isnan isinf
    all any equal allclose __len__ type eq ne lt le gt ge""".split()
)
# Full reductions are scalars when called without a dimension.
REDUCTION_METHODS = frozenset("sum mean max min amax amin std var prod".split())
CLEAN_BUILTINS = frozenset(
    """len float int bool str repr print isinstance issubclass hasattr id type range format
    round callable hash""".split()
)
CONSTRUCTORS = frozenset(
    """zeros_like ones_like empty_like full_like rand_like randn_like randint_like zeros ones
    empty full arange linspace logspace eye rand randn randint empty_strided new_zeros
    new_ones new_empty new_full new_tensor""".split()
)
GRAD_FUNCTIONS = frozenset(
    ("torch.autograd.grad", "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian")
)
GRAD_TRANSFORMS = frozenset(
    ("torch.func.grad", "torch.func.grad_and_value", "functorch.grad", "functorch.grad_and_value")
)
ELEMENT_PRESERVING = frozenset(("reversed", "list", "tuple", "sorted", "iter", "set"))
_COMPREHENSIONS = (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp)
_FN_EXPRS = (cst.Name, cst.Attribute, cst.Subscript, cst.Call, cst.Dict)


def dotted(node: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while type(node) is cst.Attribute:
        parts.append(node.attr.value)
        node = node.value
    if type(node) is not cst.Name:
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def key_of(node: cst.BaseExpression) -> str | None:
    """The access path of a Name/Attribute/Subscript chain: ``state['m']``, ``bufs[*]``."""
    t = type(node)
    if t is cst.Name:
        return node.value
    if t is cst.Attribute:
        k = key_of(node.value)
        return None if k is None else f"{k}.{node.attr.value}"
    if t is cst.Subscript:
        k = key_of(node.value)
        if k is None:
            return None
        sl = node.slice
        if len(sl) == 1 and type(sl[0].slice) is cst.Index:
            idx = sl[0].slice.value
            if type(idx) is cst.SimpleString and idx.value[:1] in "'\"":
                return f"{k}[{idx.value[1:-1]!r}]"
            if type(idx) is cst.Integer:
                return f"{k}[{idx.value}]"
        return f"{k}[*]"
    return None


def _string_index(node: cst.Subscript) -> str | None:
    sl = node.slice
    if len(sl) == 1 and type(sl[0].slice) is cst.Index:
        idx = sl[0].slice.value
        if type(idx) is cst.SimpleString and idx.value[:1] in "'\"":
            return idx.value[1:-1]
    return None


class Dualizers:
    """Which callees count as a duality map (sanitizer)."""

    # dualtype.dualize and the runtime's explicit escape hatch (it requires a reason=...)
    DEFAULT = ("dualize", "assume_primal")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.bare = set(self.DEFAULT)
        self.dotted: set[str] = set()
        for n in names:
            (self.dotted if "." in n else self.bare).add(n)

    def __contains__(self, resolved: str) -> bool:
        return resolved.rsplit(".", 1)[-1] in self.bare or resolved in self.dotted


# ----------------------------------------------------------------------------- analyzer


class Finding:
    __slots__ = ("code", "node", "message", "fix_leaves", "owners")

    def __init__(self, code: str, node: cst.CSTNode, message: str, fix_leaves, owners=()) -> None:
        self.code = code
        self.node = node
        self.message = message
        self.fix_leaves = fix_leaves
        self.owners = owners  # ids of the enclosing function definitions


class Analyzer:
    """Walks one module once and reports findings through the enabled rules' hooks."""

    def __init__(
        self,
        module: cst.Module,
        rules: Sequence["Rule"],
        dualizers: Dualizers | None = None,
        path: str | None = None,
    ) -> None:
        self.module = module
        self.path = path
        self._fixable: bool | None = None
        self._call_origin: dict[str, str] = {}  # name -> unknown function its value came from
        self.summaries = Summaries()
        self._fn_stack: list[int] = []
        # functions with parameters named like gradients: (node, enclosing class)
        self._grad_param_fns: dict[int, tuple[cst.FunctionDef, str | None]] = {}
        self.dualizers = dualizers or Dualizers()
        self.imports: dict[str, str] = {}  # local name -> dotted origin
        self.findings: dict[tuple[int, str], Finding] = {}
        self.quiet = False
        self.st = State()
        self._h_inplace = [r for r in rules if r.handles("on_inplace")]
        self._h_aug = [r for r in rules if r.handles("on_augassign")]
        self._h_assign = [r for r in rules if r.handles("on_assign")]
        self._h_coll = [r for r in rules if r.handles("on_collection")]

    # ---- reporting API used by rules

    def report(self, rule: Rule, node: cst.CSTNode, message: str, fix_leaves=None) -> None:
        if self.quiet:
            return
        key = (id(node), rule.code)
        if key not in self.findings:
            self.findings[key] = Finding(rule.code, node, message, fix_leaves, tuple(self._fn_stack))

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
            from .fix import plan

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
        if t in _COMPREHENSIONS:
            return self._leaves(e.elt, out) if t is not cst.DictComp else self._leaves(e.value, out)
        return False

    # ---- name resolution

    def resolve(self, func: cst.BaseExpression) -> str | None:
        d = dotted(func)
        if d is None:
            return None
        head, _, rest = d.partition(".")
        origin = self.imports.get(head)
        if origin is None:
            return d
        return f"{origin}.{rest}" if rest else origin

    def _record_import(self, node: cst.Import | cst.ImportFrom) -> None:
        if type(node) is cst.Import:
            for alias in node.names:
                full = dotted(alias.name)
                if full is None:
                    continue
                if alias.asname is not None and type(alias.asname.name) is cst.Name:
                    self.imports[alias.asname.name.value] = full
                else:
                    head = full.split(".", 1)[0]
                    self.imports[head] = head
            return
        if node.module is None or isinstance(node.names, cst.ImportStar):
            return
        mod = dotted(node.module)
        if mod is None:
            return
        mod = "." * len(node.relative) + mod
        for alias in node.names:
            if type(alias.name) is not cst.Name:
                continue
            local = alias.name.value
            if alias.asname is not None and type(alias.asname.name) is cst.Name:
                local = alias.asname.name.value
            self.imports[local] = f"{mod}.{alias.name.value}"

    # ---- weights

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
            s = _string_index(node)
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

    # ---- state updates

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

    # ---- hooks

    def _fire_inplace(self, site: InplaceCall) -> None:
        if not self.quiet:
            for r in self._h_inplace:
                r.on_inplace(self, site)

    # ---- expressions

    def expr(self, node: cst.BaseExpression) -> Value:
        f = _EXPR.get(type(node))
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
        taint = n in st.tainted or (n not in st.bound and (is_grad_name(n) or self._hand_grad(n)))
        ref = n in st.weights or is_weight_name(n)
        derived = n in st.derived
        fl = st.flags.get(n, 0) if st.flags else 0
        if not (taint or ref or derived or fl):
            return CLEAN
        return Value(taint, ref, derived, st.elems.get(n) if st.elems else None, fl)

    def _paired_grad(self, n: str, value_node: cst.BaseExpression) -> bool:
        """``dW1 = X.T @ dout`` is the gradient of ``W1``; ``dW0 = distribute(W0)`` is not."""
        if not self._hand_grad(n):
            return False
        rest = n[2:] if n[1] == "_" else n[1:]
        return not any(type(x) is cst.Name and x.value == rest for x in _names_in(value_node))

    def _hand_grad(self, n: str) -> bool:
        """``dW1`` next to ``W1``, ``d_w`` next to ``w``: a hand-computed gradient (see names)."""
        return _names.is_paired_grad_name(n, self.st.weights, self.st.bound)

    def _e_attribute(self, node: cst.Attribute) -> Value:
        attr = node.attr.value
        if attr == "grad":
            k = key_of(node.value)
            if k is not None:
                self.st.weights.add(k)  # whatever has a .grad is a parameter
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
        taint = base.taint or is_grad_name(attr) or tk
        ref = is_weight_name(attr) or (k is not None and k in st.weights)
        if not (taint or ref):
            return CLEAN
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
        s = _string_index(node)
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
        if not (taint or ref or base.weight_derived):
            return CLEAN
        fl = st.flags.get(k, base.flags) if (k is not None and st.flags) else base.flags
        return Value(taint, ref, base.weight_derived, None, fl if taint else 0)

    def _e_binop(self, node: cst.BinaryOperation) -> Value:
        left = self.expr(node.left)
        right = self.expr(node.right)
        return _binop(type(node.operator), left, right, node.right)

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
        return Value(elt.taint, elt.weight_ref, elt.weight_derived)

    def is_collection_update(self, elt: Value, elt_node: cst.BaseExpression | None) -> bool:
        return (
            elt.taint
            and (elt.weight_ref or elt.weight_derived)
            and (elt_node is None or self.is_update_expr(elt_node))
        )

    def _args(self, args: Sequence[cst.Arg]) -> list[Value]:
        return [self.expr(a.value) for a in args]

    def _e_call(self, node: cst.Call) -> Value:
        func = node.func
        args = node.args
        ft = type(func)
        resolved = self.resolve(func)
        last = resolved.rsplit(".", 1)[-1] if resolved else None
        if last is None and ft is cst.Attribute:  # norms[name].dualize(g), f().method(x)
            if func.attr.value in self.dualizers.bare:
                self.expr(func.value)
                self._args(args)
                return PRIMAL_VALUE
        is_module_func = False
        if resolved is not None and ft is cst.Attribute:
            head = resolved.split(".", 1)[0]
            is_module_func = (dotted(func) or "").split(".", 1)[0] in self.imports or head in (
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
        if ft is cst.Attribute and not is_module_func and is_inplace_method(func.attr.value):
            recv = self.expr(func.value)
            target = func.value
            while (
                type(target) is cst.Call
                and type(target.func) is cst.Attribute
                and is_inplace_method(target.func.attr.value)
            ):
                target = target.func.value
            return self._inplace(node, "method", func.attr.value, target, args, recv)
        if last is not None and maps.is_norm_name(last):
            # clip_grad_norm_(...), vector_norm(g), total_norm(...): a magnitude
            vals = [self.expr(func.value)] if ft is cst.Attribute and not is_module_func else []
            return maps.norm_of(vals + self._args(args))
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
        if resolved in GRAD_FUNCTIONS:
            self._args(args)
            return TAINT
        if last is None:
            return None
        if last in CONSTRUCTORS:
            if ft is cst.Attribute and not is_module_func:
                self.expr(func.value)
            self._args(args)
            return CLEAN
        if resolved in CLEAN_BUILTINS or (
            is_module_func and (resolved.startswith("math.") or last.startswith("is_"))
        ):
            self._args(args)
            if ft is cst.Attribute and not is_module_func:
                self.expr(func.value)
            return CLEAN
        if resolved == "map" or last in ("tree_map", "tree_map_only"):
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
        if last in maps.DIVIDES or last in maps.MULTIPLIES or last == "pow":
            vals = self._argvals(args)
            if len(vals) < 2:
                return _combine(vals)
            if last == "pow":
                return maps.power(vals[0], maps.float_literal(args[1].value))
            f = maps.divide if last in maps.DIVIDES else maps.multiply
            return f(vals[0], vals[1])
        return None

    def _call_method(self, node: cst.Call, func: cst.Attribute, args) -> Value:
        mname = func.attr.value
        recv = self.expr(func.value)
        if maps.looks_like_orthogonalizer(mname):  # self._orthogonalize(g), ops.newton_schulz(g)
            self._args(args)
            return PRIMAL_VALUE
        s = self.summaries.call(self, node, func, args)
        if isinstance(s, Value):
            return s
        vals = self._argvals(args) if s is None else _data_args(args, s)
        if mname in SCALAR_METHODS:
            return CLEAN
        if mname in maps.REDUCTIONS:
            return maps.reduce_of(recv, bool(vals))
        m = _method_map(mname, recv, vals, args)
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
        if mname in ("parameters", "named_parameters"):
            return WEIGHT
        if mname in ("items", "values", "copy"):
            return Value(recv.taint, recv.weight_ref, recv.weight_derived, None, recv.flags)
        if mname == "keys":
            return CLEAN
        if mname == "grad" and not vals:  # modula: weights.grad()
            return TAINT
        if mname in CONTAINER_WRITES and any(v.taint for v in vals):
            self.taint_target(func.value)  # grads.append(p.grad)
            self.summaries.record_write(self, func.value, _join(vals), False)
        return _combine([recv, *vals])

    def _call_function(self, node, func, ft, args, resolved, last) -> Value:
        if ft is not cst.Name:
            self.expr(func)
        if last is not None and maps.looks_like_orthogonalizer(last):
            self._args(args)
            return PRIMAL_VALUE
        s = self.summaries.call(self, node, func, args)
        if isinstance(s, Value):
            return s
        vals = self._argvals(args) if s is None else _data_args(args, s)
        if resolved in ("zip", "enumerate", "max", "min", "sum", "list", "tuple", "reversed", "sorted"):
            if resolved in ("max", "min", "sum") and any(v.flags & NORMV for v in vals):
                return maps.norm_of(vals)
            return _join(vals)
        return _combine(vals)

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
            new = _inplace_map(base, tv, vals, value_args)
            if new is not None:
                self._set_target(target, new)
                if new.taint:
                    self.summaries.record_write(self, target, new, False)
                return new
        if not tainted:
            return WEIGHT if is_weight else (recv if recv is not None else CLEAN)
        written = _written(base, vals)
        self._fire_inplace(
            InplaceCall(node, kind, name, target, is_weight, tuple(tainted), written.precond, tuple(fixable))
        )
        self.summaries.record_write(self, target, written, is_weight)
        if is_weight:
            return WEIGHT
        self.taint_target(target)
        if written.precond:
            self._set_target(target, Value(True, flags=written.flags))
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
                if m == "parameters":
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

    # ---- binding

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
        if type(value_node) in _FN_EXPRS:
            self.summaries.bind_alias(self, target, value_node)
        if tt is cst.Name and not v.taint and (v.weight_ref or v.weight_derived) and _is_copy(value_node):
            v = WEIGHT  # p_fp32 = p.float(), chunk = torch.stack(params): a master copy of weights
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

    # ---- statements

    def run(self) -> dict[tuple[int, str], Finding]:
        self.summaries.prescan(self, self.module)
        self.block(self.module.body)
        self._recheck_helpers()
        return self.findings

    def _recheck_helpers(self) -> None:
        """A helper whose parameter is *named* like a gradient (``def step(p, grad)``) is
        checked assuming it gets one. If every call of it in this file passes something that
        is not a raw gradient (an orthogonalized update, say), that assumption is wrong: drop
        its findings and check it again with what the calls pass (the calls themselves are
        checked through the helper's summary)."""
        for fid, (node, cls) in self._grad_param_fns.items():
            seen = self.summaries.callsites.get(fid)
            if not seen or any(v for v in seen.values()):
                continue
            mine = [k for k, f in self.findings.items() if fid in f.owners]
            if not mine:
                continue
            for k in mine:
                del self.findings[k]
            saved = self.st
            self.st = State()
            p = node.params
            self.st.bound.update(x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params))
            if cls is not None:
                self.summaries.classes.append(cls)
            self.summaries.barrier()
            self._fn_stack.append(fid)
            try:
                self._suite(node.body)
            finally:
                self._fn_stack.pop()
                self.summaries.end_barrier()
                if cls is not None:
                    self.summaries.classes.pop()
                self.st = saved

    def block(self, stmts: Sequence[cst.CSTNode]) -> None:
        for s in stmts:
            f = _STMT.get(type(s))
            if f is not None:
                f(self, s)

    def _suite(self, body) -> None:
        # IndentedBlock or SimpleStatementSuite: both have .body
        self.block(body.body)

    def _s_simple_line(self, node) -> None:
        self.block(node.body)

    def _s_expr(self, node: cst.Expr) -> None:
        self.expr(node.value)

    def _s_assign(self, node: cst.Assign) -> None:
        v = self.expr(node.value)
        for t in node.targets:
            self._assign(node, t.target, node.value, v)

    def _s_annassign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            v = self.expr(node.value)
            self._assign(node, node.target, node.value, v)

    def _s_augassign(self, node: cst.AugAssign) -> None:
        v = self.expr(node.value)
        target = node.target
        tv = self.expr(target)
        is_weight = self.is_weight_target(target)
        op = _AUG_OPS.get(type(node.operator))
        if op is not None and not is_weight and (tv.taint or tv.flags or v.taint):
            # X /= ‖X‖ normalizes a buffer; m /= √v preconditions it; u *= c scales it
            new = _binop(op, tv, v, node.value)
            self._set_target(target, new)
            if new.taint:
                self.summaries.record_write(self, target, new, False)
            return
        if v.taint:
            if self._h_aug and not self.quiet:
                site = AugAssignSite(node, is_weight, v)
                for r in self._h_aug:
                    r.on_augassign(self, site)
            self.summaries.record_write(self, target, v, is_weight)
            if not is_weight:
                self.taint_target(target)

    def _s_return(self, node) -> None:
        if node.value is not None:
            self.summaries.record_return(self.expr(node.value))

    def _s_raise(self, node: cst.Raise) -> None:
        if node.exc is not None:
            self.expr(node.exc)

    def _s_assert(self, node: cst.Assert) -> None:
        self.expr(node.test)

    def _s_del(self, node: cst.Del) -> None:
        pass

    def _s_import(self, node) -> None:
        self._record_import(node)

    def _s_if(self, node: cst.If) -> None:
        self.expr(node.test)
        pre = self.st
        self.st = pre.copy()
        self._suite(node.body)
        after_body = self.st
        self.st = pre
        orelse = node.orelse
        if orelse is not None:
            if type(orelse) is cst.If:
                self._s_if(orelse)
            else:
                self._suite(orelse.body)
        self.st.join(after_body)

    def _loop(self, node, is_for: bool) -> None:
        if is_for:
            item = self.elem_of(node.iter)
        cur = self.st
        for _ in range(4):
            self.st = cur.copy()
            if is_for:
                self._bind(node.target, item, None)
            else:
                self.expr(node.test)
            self._suite(node.body)
            nxt = cur.copy()
            nxt.join(self.st)
            if nxt.same(cur):
                cur = nxt
                break
            cur = nxt
        self.st = cur
        if node.orelse is not None:
            self._suite(node.orelse.body)

    def _s_for(self, node: cst.For) -> None:
        self._loop(node, True)

    def _s_while(self, node: cst.While) -> None:
        self._loop(node, False)

    def _s_try(self, node) -> None:
        pre = self.st.copy()
        self._suite(node.body)
        after_body = self.st
        merged = pre.copy()
        merged.join(after_body)
        outs = [after_body]
        for h in node.handlers:
            self.st = merged.copy()
            if h.type is not None:
                self.expr(h.type)
            self._suite(h.body)
            outs.append(self.st)
        if node.orelse is not None:
            self.st = after_body.copy()
            self._suite(node.orelse.body)
            outs.append(self.st)
        res = outs[0]
        for o in outs[1:]:
            res.join(o)
        self.st = res
        if node.finalbody is not None:
            self._suite(node.finalbody.body)

    def _s_with(self, node: cst.With) -> None:
        for item in node.items:
            v = self.expr(item.item)
            if item.asname is not None:
                self._bind(item.asname.name, v, None)
        self._suite(node.body)

    def _s_match(self, node) -> None:
        self.expr(node.subject)
        pre = self.st
        outs = []
        for case in node.cases:
            self.st = pre.copy()
            if case.guard is not None:
                self.expr(case.guard)
            self._suite(case.body)
            outs.append(self.st)
        self.st = pre
        for o in outs:
            self.st.join(o)

    def _s_funcdef(self, node: cst.FunctionDef) -> None:
        for d in node.decorators:
            self.expr(d.decorator)
        params = node.params
        for p in (*params.posonly_params, *params.params, *params.kwonly_params):
            if p.default is not None:
                self.expr(p.default)
        self.summaries.on_def(self, node)
        if not self.quiet and any(is_grad_name(p.name.value) for p in (*params.posonly_params, *params.params)):
            cls = self.summaries.classes[-1] if self.summaries.classes else None
            self._grad_param_fns[id(node)] = (node, cls)
        saved = self.st
        self.st = saved.copy()
        self.summaries.barrier()
        self._fn_stack.append(id(node))
        try:
            self._bind_params(params)
            self._suite(node.body)
        finally:
            self._fn_stack.pop()
            self.summaries.end_barrier()
            self.st = saved
        saved.bound.add(node.name.value)

    def _s_classdef(self, node: cst.ClassDef) -> None:
        saved = self.st
        self.st = saved.copy()
        self.summaries.classes.append(node.name.value)
        try:
            self._suite(node.body)
        finally:
            self.summaries.classes.pop()
            self.st = saved
        saved.bound.add(node.name.value)


# keyword arguments that describe where or how a tensor lives, not what it holds
META_KWARGS = frozenset(
    """device dtype device_mesh placements layout memory_format requires_grad pin_memory
    non_blocking run_check group process_group src dst async_op shape size stride
    copy""".split()
)


_AUG_OPS = {
    cst.DivideAssign: cst.Divide,
    cst.MultiplyAssign: cst.Multiply,
    cst.PowerAssign: cst.Power,
    cst.MatrixMultiplyAssign: cst.MatrixMultiply,
}


CONTAINER_WRITES = frozenset(("append", "extend", "insert", "appendleft", "add", "update"))
COPY_METHODS = frozenset(
    "float double half bfloat16 clone to detach contiguous type type_as stack cat".split()
)


def _is_copy(node: cst.BaseExpression) -> bool:
    """``p.float()``, ``p.detach().clone()``, ``torch.stack(params)``: a copy of weights."""
    if type(node) is not cst.Call:
        return False
    f = node.func
    if type(f) is cst.Attribute:
        return f.attr.value in COPY_METHODS
    return False


def _data_args(args: Sequence[cst.Arg], vals: list[Value]) -> list[Value]:
    """The values of the arguments that carry data (see ``Analyzer._argvals``)."""
    return [v for a, v in zip(args, vals) if a.keyword is None or a.keyword.value not in META_KWARGS]


def _names_in(node: cst.CSTNode, limit: int = 200):
    """The Name nodes of a (small) expression, attribute names excluded."""
    stack = [node]
    while stack and limit > 0:
        limit -= 1
        n = stack.pop()
        if type(n) is cst.Name:
            yield n
        elif type(n) is cst.Attribute:
            stack.append(n.value)
        else:
            stack.extend(n.children)


def _binop(op: type, left: Value, right: Value, right_node: cst.BaseExpression) -> Value:
    if op is cst.Divide:
        return maps.divide(left, right)
    if op is cst.Multiply or op is cst.MatrixMultiply:
        return maps.multiply(left, right)
    if op is cst.Power:
        return maps.power(left, maps.float_literal(right_node))
    return _combine((left, right))


def _method_map(mname: str, recv: Value, vals: list[Value], args) -> Value | None:
    """``g.sign()``, ``g.norm()``, ``v.sqrt()``, ``a.div(b)``, ``g.svd()`` (see analysis.maps)."""
    if mname in maps.SIGN or mname in maps.SIGN_INPLACE:
        return PRIMAL_VALUE
    if maps.is_norm_name(mname):
        return maps.norm_of([recv])
    if mname in maps.ROOTS:
        return maps.root_of(recv)
    if mname in maps.INV_ROOTS:
        return maps.rsqrt_of(recv)
    if mname == "pow" and args:
        return maps.power(recv, maps.float_literal(args[0].value))
    if vals and mname in maps.DIVIDES:
        return maps.divide(recv, vals[0])
    if vals and mname in maps.MULTIPLIES:
        return maps.multiply(recv, vals[0])
    if mname in maps.SVDS:
        return maps.svd_of(recv)
    return None


def _inplace_map(base: str, tv: Value, vals: list[Value], args) -> Value | None:
    """What an in-place map makes of a buffer: ``u.sign_()`` is primal, ``u.div_(‖u‖)``
    normalizes it, ``d.sqrt_()`` makes a denominator, ``b.copy_(x)`` is ``x``."""
    if base in ("sign_", "sgn_"):
        return PRIMAL_VALUE
    if base == "sqrt_":
        return maps.root_of(tv)
    if base == "rsqrt_":
        return maps.rsqrt_of(tv)
    if base == "pow_" and args:
        return maps.power(tv, maps.float_literal(args[0].value))
    if base == "div_" and vals and not tv.weight_ref:
        return maps.divide(tv, vals[0])
    if base == "mul_" and vals and not tv.weight_ref and not vals[0].taint:
        return maps.multiply(tv, vals[0])
    if base == "copy_" and vals:
        return vals[0]
    if base in ("add_", "sub_", "clamp_", "clamp_min_", "clamp_max_") and not any(v.taint for v in vals):
        return tv if tv.flags else None
    return None


def _written(base: str, vals: list[Value]) -> Value:
    """The value an in-place update writes: ``addcdiv_(m, d)`` writes m/d."""
    if base == "addcdiv_" and len(vals) >= 2:
        return _combine((maps.divide(vals[0], vals[1]), *vals[2:]))
    if base == "addcmul_" and len(vals) >= 2:
        return _combine((maps.multiply(vals[0], vals[1]), *vals[2:]))
    return _combine(vals)



_EXPR: dict[type, Callable[[Analyzer, cst.CSTNode], Value]] = {
    cst.Name: Analyzer._e_name,
    cst.Attribute: Analyzer._e_attribute,
    cst.Subscript: Analyzer._e_subscript,
    cst.Call: Analyzer._e_call,
    cst.BinaryOperation: Analyzer._e_binop,
    cst.UnaryOperation: Analyzer._e_unary,
    cst.BooleanOperation: Analyzer._e_boolop,
    cst.Comparison: Analyzer._e_compare,
    cst.IfExp: Analyzer._e_ifexp,
    cst.Tuple: Analyzer._e_seq,
    cst.List: Analyzer._e_seq,
    cst.Set: Analyzer._e_seq,
    cst.Dict: Analyzer._e_dict,
    cst.ListComp: Analyzer._e_comp,
    cst.SetComp: Analyzer._e_comp,
    cst.GeneratorExp: Analyzer._e_comp,
    cst.DictComp: Analyzer._e_comp,
    cst.Lambda: Analyzer._e_lambda,
    cst.NamedExpr: Analyzer._e_named,
    cst.Await: Analyzer._e_await,
    cst.Yield: Analyzer._e_yield,
    cst.Integer: Analyzer._e_const,
    cst.Float: Analyzer._e_const,
    cst.Imaginary: Analyzer._e_const,
    cst.SimpleString: Analyzer._e_const,
    cst.ConcatenatedString: Analyzer._e_const,
    cst.FormattedString: Analyzer._e_const,
    cst.Ellipsis: Analyzer._e_const,
    cst.Slice: Analyzer._e_const,
}
if hasattr(cst, "TemplatedString"):
    _EXPR[cst.TemplatedString] = Analyzer._e_const
_EXPR[cst.StarredElement] = lambda a, n: a.expr(n.value)
_EXPR[cst.Element] = lambda a, n: a.expr(n.value)
_EXPR[cst.Arg] = lambda a, n: a.expr(n.value)

_STMT: dict[type, Callable[[Analyzer, cst.CSTNode], None]] = {
    cst.SimpleStatementLine: Analyzer._s_simple_line,
    cst.Expr: Analyzer._s_expr,
    cst.Assign: Analyzer._s_assign,
    cst.AnnAssign: Analyzer._s_annassign,
    cst.AugAssign: Analyzer._s_augassign,
    cst.Return: Analyzer._s_return,
    cst.Raise: Analyzer._s_raise,
    cst.Assert: Analyzer._s_assert,
    cst.Del: Analyzer._s_del,
    cst.Import: Analyzer._s_import,
    cst.ImportFrom: Analyzer._s_import,
    cst.If: Analyzer._s_if,
    cst.For: Analyzer._s_for,
    cst.While: Analyzer._s_while,
    cst.Try: Analyzer._s_try,
    cst.TryStar: Analyzer._s_try,
    cst.With: Analyzer._s_with,
    cst.Match: Analyzer._s_match,
    cst.FunctionDef: Analyzer._s_funcdef,
    cst.ClassDef: Analyzer._s_classdef,
}
