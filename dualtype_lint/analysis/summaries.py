"""Function summaries: what a call does with its arguments, computed on demand.

For a function the analyzer can see (defined in the same file, a method called through
``self``, a name bound to one, an entry of a dict of functions, ``functools.partial`` of one,
or a function imported from another file of the linted tree), the summary answers, for each
argument position *j*, "if argument *j* is a raw gradient":

- what the call returns: a raw gradient, a preconditioned one, or something clean (a duality
  map such as a Newton–Schulz iteration returns a primal; ``muon_update(grad, buf)`` too);
- which other arguments it writes that gradient into (``momentum.lerp_(grad)`` makes the
  caller's buffer a gradient; ``_add_scaled_(p, buf, -lr)`` writes it into the caller's weight).

Plus one run with no tainted argument: does it return a gradient of its own (``p.grad``)?
Each run walks the function body once with the caller's analyzer in quiet mode; results are
memoized per function and argument position, so a helper costs a few walks per file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import libcst as cst

from ..names import is_grad_name
from .sites import AssignSite, InplaceCall
from .tables import FN_EXPRS
from .values import CLEAN, TAINT_FLAGS, State, Value, combine, join, join_struct

if TYPE_CHECKING:
    from ..dataflow import Analyzer

MAX_DEPTH = 8  # nested summary computations (helper calling helper ...)
MAX_PARAMS = 16  # beyond this, arguments are not followed one by one
SETATTR = ".<setattr>"  # the part of an argument setattr(arg, name, v) writes
_ROOT = re.compile(r"[.\[]")


class FunctionInfo:
    __slots__ = ("node", "params", "vararg", "owner", "cls", "bound", "nested", "reads")

    def __init__(self, node: cst.FunctionDef, owner: "Analyzer", cls: str | None, nested: bool = False) -> None:
        p = node.params
        self.node = node
        self.params = [x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)]
        star = p.star_arg
        self.vararg = star.name.value if isinstance(star, cst.Param) else None  # `*args`
        self.owner = owner
        self.cls = cls
        # positional arguments bound when called through an instance: `self` (not for a
        # @staticmethod)
        static = any(type(d.decorator) is cst.Name and d.decorator.value == "staticmethod" for d in node.decorators)
        self.bound = 0 if cls is None or static else 1
        # defined inside another function: it reads the enclosing function's locals (closure)
        self.nested = nested
        self.reads: tuple[str, ...] | None = None  # names the body reads, parameters aside (when needed)

    @property
    def name(self) -> str:
        return self.node.name.value


class Run:
    """One walk of a function body with argument ``j`` (or none) a raw gradient."""

    __slots__ = ("params", "returns", "writes", "external", "none")

    def __init__(self, params: list[str]) -> None:
        self.params = {n: i for i, n in enumerate(params)}
        self.none: dict[str, bool] = {}  # parameters known to be None (True) or a tensor (False)
        self.returns: list[Value] = []
        # (param index, part written, e.g. "['exp_avg']") -> (value, seen as a weight)
        self.writes: dict[tuple[int, str], tuple[Value, bool]] = {}
        self.external: dict[int, cst.BaseExpression] = {}  # weights written that are not arguments

    @property
    def ret(self) -> Value:
        return join_struct(self.returns) if self.returns else CLEAN


class Summaries:
    def __init__(self) -> None:
        self.defs: dict[str, FunctionInfo] = {}
        self.methods: dict[str, dict[str, FunctionInfo]] = {}
        self.aliases: dict[str, tuple[tuple[FunctionInfo, int], ...]] = {}
        self.bases: dict[str, tuple[cst.BaseExpression, ...]] = {}  # class -> its base classes
        self.classes: list[str] = []
        self.stack: list[Run | None] = []
        self.memo: dict[tuple[int, tuple], Run | None] = {}
        # function -> argument position -> whether some call in this file passes a gradient
        self.callsites: dict[int, dict[int, bool]] = {}
        self.nested_infos: dict[int, FunctionInfo] = {}  # id(def) -> its info, for defs met in walks
        self.running: list[FunctionInfo] = []  # the functions of the runs on self.stack
        self.rebinds: dict[tuple[int, str], bool] = {}  # (function, parameter) -> rebound in it
        self.depth = 0
        self.version = 0  # changes of defs and aliases (a loop's walk is repeated only if needed)

    # ---- tables

    def prescan(self, a: "Analyzer", module: cst.Module) -> None:
        for s in module.body:
            if type(s) is cst.FunctionDef:
                self.defs[s.name.value] = FunctionInfo(s, a, None)
            elif type(s) is cst.ClassDef:
                self.bases[s.name.value] = tuple(b.value for b in s.bases if b.keyword is None)
                table = self.methods.setdefault(s.name.value, {})
                for m in s.body.body:
                    if type(m) is cst.FunctionDef:
                        table[m.name.value] = FunctionInfo(m, a, s.name.value)

    def on_def(self, a: "Analyzer", node: cst.FunctionDef) -> None:
        """A nested function (module-level ones and methods are known from the prescan)."""
        if self.classes and node.name.value in self.methods.get(self.classes[-1], {}):
            return
        if node.name.value not in self.defs or self.defs[node.name.value].node is not node:
            fi = self.nested_infos.get(id(node))
            if fi is None:  # one per definition, so its names are read once
                fi = self.nested_infos[id(node)] = FunctionInfo(node, a, None, nested=bool(a.fn_nodes))
            self.defs[node.name.value] = fi
            self.version += 1

    def bind_alias(self, a: "Analyzer", target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        t = type(value)
        if not self.aliases and (
            (t is cst.Name and value.value not in self.defs)
            or (t is cst.Attribute and not self.classes)
            or t is cst.Subscript
            or (t is cst.Call and type(value.func) is cst.Attribute and value.func.attr.value != "partial")
        ):
            return  # cannot evaluate to a known function, and there is no alias to forget
        k = _key(target)
        if k is None:
            return
        fns = self.functions_of(a, value, imports=False) if type(value) in FN_EXPRS else ()
        if fns:
            # a may-alias: ``func = _single_tensor_adam`` / ``func = _multi_tensor_adam``
            self.aliases[k] = _union((self.aliases.get(k, ()), fns))
            self.version += 1
        elif k in self.aliases:
            del self.aliases[k]
            self.version += 1

    def functions_of(
        self, a: "Analyzer", e: cst.BaseExpression, imports: bool = True
    ) -> tuple[tuple[FunctionInfo, int], ...]:
        """The functions an expression may evaluate to, with the number of positional
        arguments already bound (``partial(f, x)``: 1; ``self.f``: 1 for ``self``)."""
        from ..dataflow import dotted, key_of

        t = type(e)
        if t is cst.Name or t is cst.Attribute:
            k = key_of(e)
            if k in self.aliases:
                return self.aliases[k]
            if t is cst.Name:
                fi = self.defs.get(e.value)
                if fi is not None:
                    return ((fi, 0),)
            elif type(e.value) is cst.Name and e.value.value == "self" and self.classes:
                fi = self.method(a, self.classes[-1], e.attr.value, imports)
                if fi is not None:
                    return ((fi, fi.bound),)
            d = dotted(e)
            if imports and d is not None and d.split(".", 1)[0] in a.imports:
                from .project import find_function

                fi = find_function(a, a.resolve(e) or d)
                if fi is not None:
                    return ((fi, 0),)
            return ()
        if t is cst.Subscript:
            k = key_of(e.value)
            return self.aliases.get(k, ()) if k is not None else ()
        if t is cst.Call:
            r = a.resolve(e.func)
            if r in ("functools.partial", "partial") and e.args and e.args[0].keyword is None:
                bound = sum(1 for x in e.args[1:] if x.keyword is None and not x.star)
                inner = self.functions_of(a, e.args[0].value, imports)
                return tuple((fi, s + bound) for fi, s in inner)
            if r == "dict":
                return _union(self.functions_of(a, x.value, imports) for x in e.args if x.keyword is not None)
            return ()
        if t is cst.Dict:
            els = e.elements
            return _union(self.functions_of(a, el.value, imports) for el in els if type(el) is cst.DictElement)
        return ()

    # ---- methods through inheritance

    def method(
        self, a: "Analyzer", cls: str, name: str, imports: bool, depth: int = 0
    ) -> FunctionInfo | None:
        """Method ``name`` of class ``cls`` of this module, or inherited from a base class in
        this module or (``imports``) in another file of the linted tree."""
        fi = self.methods.get(cls, {}).get(name)
        if fi is not None or depth >= MAX_DEPTH:
            return fi
        for base in self.bases.get(cls, ()):
            if type(base) is cst.Name and base.value in self.methods:
                fi = self.method(a, base.value, name, imports, depth + 1)
            elif imports and _imported(a, base):
                from .project import find_class

                found = find_class(a, a.resolve(base) or "")
                fi = found[0].summaries.method(found[0], found[1], name, imports, depth + 1) if found else None
            if fi is not None:
                return fi
        return None

    def imported_bases(self, a: "Analyzer", cls: str, depth: int = 0) -> bool:
        """Does ``cls`` derive, here or through base classes of this module, from an import?"""
        for base in self.bases.get(cls, ()):
            if type(base) is cst.Name and base.value in self.methods:
                if depth < MAX_DEPTH and self.imported_bases(a, base.value, depth + 1):
                    return True
            elif _imported(a, base):
                return True
        return False

    def inherited_from_import(self, a: "Analyzer", func: cst.BaseExpression) -> bool:
        """``self.helper`` where the class may inherit ``helper`` from another file."""
        return (
            type(func) is cst.Attribute
            and type(func.value) is cst.Name
            and func.value.value == "self"
            and bool(self.classes)
            and self.imported_bases(a, self.classes[-1])
        )

    # ---- calls

    def may_resolve(self, a: "Analyzer", func: cst.BaseExpression) -> bool:
        """A cheap test before :meth:`functions_of`."""
        t = type(func)
        if t is cst.Name:
            n = func.value
            return n in self.defs or n in self.aliases or n in a.imports
        if t is cst.Attribute:
            v = func.value
            if type(v) is cst.Name and v.value == "self" and self.classes:
                cls = self.classes[-1]
                if self.method(a, cls, func.attr.value, imports=False) is not None:
                    return True
                if self.imported_bases(a, cls):
                    return True
            while type(v) is cst.Attribute:
                v = v.value
            if type(v) is not cst.Name:
                return False
            if v.value in a.imports:
                return True
            return bool(self.aliases) and _key(func) in self.aliases
        return t is cst.Subscript and bool(self.aliases)

    def returns_input(self, a: "Analyzer", func: cst.BaseExpression) -> bool:
        """Can a function of this file that ``func`` names return one of its parameters
        unchanged (``if bypass(t.ndim): return t`` before ``t`` is rebound)?"""
        if not self.may_resolve(a, func):
            return False
        return any(_returns_param(fi) for fi, _ in self.functions_of(a, func, imports=False))

    def call(
        self, a: "Analyzer", node: cst.Call, func: cst.BaseExpression, args
    ) -> Value | list[Value] | None:
        """The value of a call of a known function, applying its writes to the arguments.
        None if the callee is not known (arguments not evaluated); the list of argument values
        if they were evaluated but the callee is not known.

        Another file is looked at only when an argument is a gradient: a call with clean
        arguments of a function imported from elsewhere costs nothing more."""
        if not self.may_resolve(a, func):
            return None
        fns = self.functions_of(a, func, imports=False)
        vals = None
        if not fns:
            if not (_imported(a, func) or self.inherited_from_import(a, func)):
                return None
            vals = [a.expr(x.value) for x in args]
            if not any(v.taint for v in vals):
                return vals
            fns = self.functions_of(a, func)
            if not fns:
                return vals
        if vals is None:
            vals = [a.expr(x.value) for x in args]
        if any(x.star for x in args):
            return combine(vals)
        return join_struct([self._apply(a, node, fi, shift, args, vals) for fi, shift in fns])

    def _apply(self, a: "Analyzer", node, fi: FunctionInfo, shift: int, args, vals) -> Value:
        index: list[int | None] = []
        pos = shift
        for x in args:
            if x.keyword is None:
                index.append(pos)
                pos += 1
            else:
                kw = x.keyword.value
                index.append(fi.params.index(kw) if kw in fi.params else None)
        # a nested function called from where it is visible reads the caller's locals: it is
        # walked from the caller's state when a name it reads holds something there
        closure = a.st if fi.nested and fi.owner is a and _closure_key(fi, a.st) else None
        if closure is None and id(fi.node) in a.walked_fns and id(fi.node) not in a.grad_fns:
            base = None  # its walk met no gradient source: with clean arguments, nothing
        else:
            base = fi.owner.summaries.run(fi, (), closure)
            if base is not None and (base.ret.taint or base.writes) and fi.owner is a:
                a.grad_fns.update(map(id, a.fn_nodes))  # a source reached through the call
        parts = [base.ret if base is not None else CLEAN]
        clean_base = not parts[0].taint
        weighty = False
        seen = self.callsites.setdefault(id(fi.node), {})
        for x, v, i in zip(args, vals, index):
            if i is not None:
                seen[i] = seen.get(i, False) or v.taint
        if base is not None:
            for (wi, part), (wv, seen_weight) in base.writes.items():
                self._apply_write(a, node, fi, args, index, None, wi, part, wv, seen_weight, None)
        tainted = []
        for x, v, i in zip(args, vals, index):
            weighty = weighty or v.weight_ref or v.weight_derived
            if v.taint:
                if i is None or i >= MAX_PARAMS:
                    parts.append(v)  # not followed: the gradient may come back
                else:
                    tainted.append((i, v.flags & TAINT_FLAGS, x))
        if tainted:
            # one walk with every gradient argument a gradient, so that m/√v sees both; the
            # positions given a tensor, so that `if a3 is None:` takes its one feasible branch
            tensors = frozenset(i for v, i in zip(vals, index) if i is not None and (v.taint or v.weight_ref))
            r = fi.owner.summaries.run(fi, tuple((i, f) for i, f, _ in tainted), closure, tensors)
            if r is None:
                parts.extend(vals[k] for k, i in enumerate(index) if i in {t[0] for t in tainted})
            else:
                parts.append(r.ret)
                src = {i: x for i, _, x in tainted}
                if r.external and fi.owner is a and not any(is_grad_name(fi.params[i]) for i in src):
                    for tgt in r.external.values():
                        a.fire_inplace(InplaceCall(node, "helper", fi.name, tgt, True, (tainted[0][2].value,)))
                for (wi, part), (wv, seen_weight) in r.writes.items():
                    if wi not in src:
                        first = tainted[0]
                        self._apply_write(a, node, fi, args, index, first[2], wi, part, wv, seen_weight, first[0])
        if clean_base and len(parts) > 1:
            parts = parts[1:]  # an untainted return under no gradient says nothing more
        res = join_struct(parts)
        if weighty and not res.primal:
            res = Value(res.taint, False, True, None, res.flags)
        return res

    def _apply_write(self, a, node, fi, args, index, src, wi, part, wv, seen_weight, i) -> None:
        """The helper wrote argument ``i`` (a gradient) into argument ``wi``."""
        if part == SETATTR:
            # set_param(mod, name, tmp) ends in setattr(mod, name, tmp): new weights passed in
            # are stored as a weight of mod (DTL003 at this call)
            v = a.expr(src.value) if src is not None else wv
            if v.taint and v.weight_derived:
                a.fire_assign(AssignSite(node, node, src.value, v, True))
            return

        tgt = next((x.value for x, k in zip(args, index) if k == wi), None)
        if tgt is None:
            return
        if a.is_weight_target(tgt):
            if src is None or (seen_weight and is_grad_name(fi.params[i])):
                return  # the helper's own walk reports it
            site = InplaceCall(node, "helper", fi.name, tgt, True, (src.value,), wv.precond, ())
            a.fire_inplace(site)
            self.record_write(a, tgt, wv, True)
        else:
            a.taint_target(tgt, part)
            if wv.precond:  # _addcdiv_scaled_(buf, grad, avg, lr): buf holds m/√v now
                from ..dataflow import key_of

                k = key_of(tgt)
                if k is not None:
                    a.st.flags[k + part] = wv.flags
            self.record_write(a, tgt, wv, False)

    # ---- collection during a run

    def record_write(self, a: "Analyzer", target: cst.BaseExpression, v: Value, is_weight: bool) -> None:
        if not self.stack or self.stack[-1] is None or not v.taint:
            return
        from ..dataflow import key_of

        run = self.stack[-1]
        k = key_of(target)
        if k is None:
            return
        root = _ROOT.split(k, 1)[0]
        i = run.params.get(root)
        if i is None and is_weight and root not in run.params:
            # a weight that is not an argument (self._params): reported at the call
            run.external.setdefault(id(target), target)
            return
        if i is not None:
            part = k[len(root):].split("[*]", 1)[0]
            prev = run.writes.get((i, part))
            new = (v, is_weight) if prev is None else (join((prev[0], v)), prev[1] or is_weight)
            run.writes[(i, part)] = new

    def known_none(self, test: cst.BaseExpression) -> bool | None:
        """In a summary run, the value of ``p is None`` / ``p is not None`` for a parameter ``p``
        the caller gave a tensor and the function never rebinds; else None (unknown)."""
        run = self.stack[-1] if self.stack else None
        if run is None or not run.none or type(test) is not cst.Comparison or len(test.comparisons) != 1:
            return None
        c = test.comparisons[0]
        op = type(c.operator)
        if type(test.left) is not cst.Name or op not in (cst.Is, cst.IsNot):
            return None
        if type(c.comparator) is not cst.Name or c.comparator.value != "None":
            return None
        is_none = run.none.get(test.left.value)
        if is_none is None or self._rebinds(test.left.value):
            return None
        return is_none if op is cst.Is else not is_none

    def _rebinds(self, name: str) -> bool:
        from .branches import assigns

        fi = self.running[-1]
        k = (id(fi.node), name)
        if k not in self.rebinds:
            self.rebinds[k] = assigns(fi.node.body, name)
        return self.rebinds[k]

    def record_setattr(self, a: "Analyzer", obj: cst.BaseExpression, v: Value) -> None:
        """``setattr(obj, name, v)`` in a run: a write into a member of ``obj`` chosen at run time."""
        run = self.stack[-1] if self.stack else None
        k = _key(obj)
        if run is not None and k is not None and k in run.params:
            run.writes[(run.params[k], SETATTR)] = (v, True)

    def record_return(self, v: Value) -> None:
        if self.stack and self.stack[-1] is not None:
            self.stack[-1].returns.append(v)

    def barrier(self) -> None:
        """Entering a nested function: its returns and writes are not the enclosing one's."""
        self.stack.append(None)

    def end_barrier(self) -> None:
        self.stack.pop()

    # ---- runs

    def run(
        self,
        fi: FunctionInfo,
        tainted: tuple[tuple[int, int], ...],
        closure: State | None = None,
        tensors: frozenset[int] = frozenset(),
    ) -> Run | None:
        """Walk ``fi`` with the arguments ``tainted`` (position, kind flags) gradients; a nested
        function from its caller's state ``closure`` (its parameters shadow the caller's names).
        ``tensors``: positions given a tensor (never None). Memoized on all of these, the
        closure by what the names the function reads hold in it."""
        key = (id(fi.node), tainted, tensors, _closure_key(fi, closure) if closure is not None else ())
        if key in self.memo:
            return self.memo[key]
        if self.depth >= MAX_DEPTH:
            return None
        self.memo[key] = None  # recursion: unknown while in progress
        a = fi.owner
        saved = (a.st, a.quiet)
        run = Run(fi.params)
        a.quiet = True
        a.st = st = State() if closure is None else closure.copy()
        for n in (*fi.params, *((fi.vararg,) if fi.vararg is not None else ())):
            st.bound.add(n)
            if closure is not None:
                _forget(st, n)
        for j, flags in tainted:
            name = fi.params[j] if 0 <= j < len(fi.params) else fi.vararg if j >= 0 else None
            if name is not None:
                st.tainted.add(name)
                if flags and name != fi.vararg:
                    st.flags[name] = flags
        run.none = {fi.params[i]: False for i in tensors if 0 <= i < len(fi.params)}
        self.stack.append(run)
        if fi.cls is not None:
            self.classes.append(fi.cls)
        self.depth += 1
        self.running.append(fi)
        try:
            a.suite(fi.node.body)
        finally:
            self.running.pop()
            self.depth -= 1
            if fi.cls is not None:
                self.classes.pop()
            self.stack.pop()
            a.st, a.quiet = saved
        self.memo[key] = run
        return run


def _closure_key(fi: FunctionInfo, st: State) -> tuple:
    """What the names ``fi`` reads hold in the enclosing state ``st`` (gradient, kind, weight);
    empty if none holds anything, and then the closure does not matter."""
    if not st.tainted and not st.flags:
        return ()  # no gradient anywhere in the caller: its weights alone change no summary
    if fi.reads is None:
        fi.reads = tuple(sorted(set(_names_read(fi.node.body)).difference(fi.params)))
    return tuple(
        (n, n in st.tainted, st.flags.get(n, 0), n in st.weights)
        for n in fi.reads
        if n in st.tainted or n in st.flags or n in st.weights
    )


def _names_read(node: cst.CSTNode):
    from .branches import fast_children

    stack = [node]
    while stack:
        n = stack.pop()
        if type(n) is cst.Name:
            yield n.value
        else:
            stack.extend(fast_children(n))


def _forget(st: State, name: str) -> None:
    """A parameter shadows the enclosing function's ``name``."""
    st.tainted.discard(name)
    st.weights.discard(name)
    st.derived.discard(name)
    st.aliases.pop(name, None)
    st.flags.pop(name, None)
    st.elems.pop(name, None)


def _returns_param(fi: FunctionInfo) -> bool:
    """Does ``fi``'s body, before it rebinds a parameter, return that parameter as it is?"""
    from .branches import assigns

    live = set(fi.params)
    for s in fi.node.body.body:
        stack: list[cst.CSTNode] = [s]
        while stack:
            n = stack.pop()
            if type(n) is cst.Return and type(n.value) is cst.Name and n.value.value in live:
                return True
            if isinstance(n, (cst.BaseCompoundStatement, cst.BaseSuite, cst.SimpleStatementLine, cst.Else)):
                stack.extend(c for c in n.children if isinstance(c, (cst.BaseStatement, cst.BaseSuite, cst.Else, cst.BaseSmallStatement)))
        live = {p for p in live if not assigns(s, p)}
        if not live:
            return False
    return False


def _key(node: cst.BaseExpression) -> str | None:
    from .paths import key_of

    return key_of(node)


def _imported(a: "Analyzer", func: cst.BaseExpression) -> bool:
    from ..dataflow import dotted

    d = dotted(func)
    return d is not None and d.split(".", 1)[0] in a.imports


def _union(groups) -> tuple:
    out: list = []
    for g in groups:
        for x in g:
            if x not in out:
                out.append(x)
    return tuple(out)

