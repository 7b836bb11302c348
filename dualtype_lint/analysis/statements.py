"""Statements and control flow: branches joined, loops to a fixed point, functions, classes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import libcst as cst

from ..names import is_grad_name
from . import branches
from .ops import binop, names_in
from .sites import AugAssignSite
from .tables import AUG_OPS
from .values import MOMENT2, SQUARE, State, Value

if TYPE_CHECKING:
    from .reporting import Finding

# filled by dualtype_lint.dataflow: statement type -> Analyzer method
STMT_HANDLERS: dict = {}


class Statements:
    """Part of :class:`dualtype_lint.dataflow.Analyzer`."""

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
            self.fn_nodes.append(node)
            try:
                self.suite(node.body)
            finally:
                self.fn_nodes.pop()
                self.summaries.end_barrier()
                if cls is not None:
                    self.summaries.classes.pop()
                self.st = saved

    def block(self, stmts: Sequence[cst.CSTNode]) -> None:
        i = 0
        while i < len(stmts):
            s = stmts[i]
            # in the main walk of a function (locals: a call cannot rebind them); nested splits
            # double the walk, so they are bounded
            # (and only where a gradient is about: the split walks the span twice)
            if (
                type(s) is cst.If
                and self.fn_nodes
                and not self.quiet
                and self.splits < branches.MAX_NESTED
                and (self.st.tainted or self.st.flags)
            ):
                k = id(s)
                if k not in self.correlations:  # syntax only: the same on every walk of the block
                    self.correlations[k] = branches.correlated(stmts, i)
                found = self.correlations[k]
                if found is not None and branches.base_of(found[1][0]) not in self._declared_outside():
                    self._split_walk(stmts, i, *found)
                    i = found[0] + 1
                    continue
            f = STMT_HANDLERS.get(type(s))
            if f is not None:
                f(self, s)
            i += 1

    def _declared_outside(self) -> frozenset[str]:
        fn = self.fn_nodes[-1]
        names = self.declared.get(id(fn))
        if names is None:
            names = self.declared[id(fn)] = branches.declared_outside(fn)
        return names

    def _split_walk(self, stmts: Sequence[cst.CSTNode], i: int, j: int, first: branches.Test) -> None:
        """``stmts[i]`` and ``stmts[j]`` test the same local (see :mod:`.branches`): walk
        ``stmts[i..j]`` once per branch of the first test, the second ``if`` only where feasible."""
        pre = self.st
        ends = []
        self.splits += 1
        try:
            for taken in (True, False):
                self.st = pre.copy()
                self._if_branches(stmts[i], taken, not taken)
                self.block(stmts[i + 1 : j])
                second = branches.simple_test(stmts[j].test)
                assert second is not None
                self._if_branches(stmts[j], *branches.feasible(first, taken, second))
                ends.append(self.st)
        finally:
            self.splits -= 1
        self.st = ends[0]
        self.st.join(ends[1])

    def _if_branches(self, node: cst.If, body: bool, orelse: bool) -> None:
        """An ``if`` of which only the named branches can run."""
        self.expr(node.test)
        if body and orelse:
            pre = self.st
            self.st = pre.copy()
            self.suite(node.body)
            after_body, self.st = self.st, pre
            self._orelse(node)
            self.st.join(after_body)
        elif body:
            self.suite(node.body)
        elif orelse:
            self._orelse(node)

    def _orelse(self, node: cst.If) -> None:
        orelse = node.orelse
        if orelse is None:
            return
        if type(orelse) is cst.If:
            self._s_if(orelse)
        else:
            self.suite(orelse.body)

    def suite(self, body) -> None:
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
        is_weight = self.is_weight_target(target) or (
            v.taint and type(target) is cst.Name and _pairs_with(target.value, node.value)
        )
        op = AUG_OPS.get(type(node.operator))
        if op is not None and not is_weight and (tv.taint or tv.flags or v.taint):
            # X /= ‖X‖ normalizes a buffer; m /= √v preconditions it; u *= c scales it
            new = binop(op, tv, v, node.value)
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
                if type(node.operator) is cst.AddAssign and v.flags & (SQUARE | MOMENT2):
                    self._set_target(target, Value(True, flags=MOMENT2))  # v += g * g: a second moment

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
        self.record_import(node)

    def _s_if(self, node: cst.If) -> None:
        known = self.summaries.known_none(node.test)
        if known is None:
            self._if_branches(node, True, True)
        else:  # `if a3 is None:` in a helper called with a3 given (see Summaries.known_none)
            self._if_branches(node, known, not known)

    def _loop(self, node, is_for: bool) -> None:
        if is_for:
            item = self.elem_of(node.iter)
        cur = self.st
        for _ in range(4):
            self.st = cur.copy()
            before = self._tables()
            if is_for:
                self._bind(node.target, item, None)
            else:
                self.expr(node.test)
            self.suite(node.body)
            nxt = cur.copy()
            nxt.join(self.st)
            if nxt.same(cur) or self._walk_again_same(cur, nxt, before):
                cur = nxt
                break
            cur = nxt
        self.st = cur

    def _tables(self) -> tuple:
        """What a walk reads besides the state: the file's functions, aliases and imports,
        which functions have been walked and met a gradient; and whether it wrote a gradient
        into a buffer (the only step that reads ``State.aliases``, which the fixed point
        test leaves out)."""
        return (
            self.summaries.version, self.imports_version, len(self.walked_fns), len(self.grad_fns),
            self.taint_writes,
        )

    def _walk_again_same(self, cur: State, nxt: State, before: tuple) -> bool:
        """Would walking the body again from ``nxt`` repeat the walk from ``cur`` exactly (so
        that ``nxt`` is the fixed point)? Yes if the walk changed none of the tables it reads,
        ``nxt`` differs from ``cur`` only in names now bound (``x = ...`` in the body), and no
        such name is read in a way that depends on being bound: a gradient name (a free
        ``grads`` is a source, a bound one is not), a ``d<name>``, or the ``<name>`` of a
        ``d<name>`` that was looked up (a hand-written gradient). The second walk was most of
        the cost of loops; it is still made whenever any of this does not hold."""
        if self._tables() != before:
            return False
        if (
            nxt.tainted != cur.tainted
            or nxt.weights != cur.weights
            or nxt.derived != cur.derived
            or nxt.flags != cur.flags
            or len(nxt.elems) != len(cur.elems)
            or any(cur.elems.get(k) is not e for k, e in nxt.elems.items())
        ):
            return False
        rests = self.rest_queries
        for n in nxt.bound - cur.bound:
            if n[:1] == "d" or n in rests or is_grad_name(n):
                return False
        return True
        if node.orelse is not None:
            self.suite(node.orelse.body)

    def _s_for(self, node: cst.For) -> None:
        self._loop(node, True)

    def _s_while(self, node: cst.While) -> None:
        self._loop(node, False)

    def _s_try(self, node) -> None:
        pre = self.st.copy()
        self.suite(node.body)
        after_body = self.st
        merged = pre.copy()
        merged.join(after_body)
        outs = [after_body]
        for h in node.handlers:
            self.st = merged.copy()
            if h.type is not None:
                self.expr(h.type)
            self.suite(h.body)
            outs.append(self.st)
        if node.orelse is not None:
            self.st = after_body.copy()
            self.suite(node.orelse.body)
            outs.append(self.st)
        res = outs[0]
        for o in outs[1:]:
            res.join(o)
        self.st = res
        if node.finalbody is not None:
            self.suite(node.finalbody.body)

    def _s_with(self, node: cst.With) -> None:
        for item in node.items:
            v = self.expr(item.item)
            if item.asname is not None:
                self._bind(item.asname.name, v, None)
        self.suite(node.body)

    def _s_match(self, node) -> None:
        self.expr(node.subject)
        pre = self.st
        outs = []
        for case in node.cases:
            self.st = pre.copy()
            if case.guard is not None:
                self.expr(case.guard)
            self.suite(case.body)
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
        saved, origins = self.st, self._call_origin
        self.st = saved.copy()
        self._call_origin = dict(origins)  # a function's `m = whiten(g)` does not name another's m
        self.summaries.barrier()
        self.fn_nodes.append(node)
        try:
            self._bind_params(params)
            self.suite(node.body)
        finally:
            self._call_origin = origins
            self.fn_nodes.pop()
            if not self.quiet:
                self.walked_fns.add(id(node))
            self.summaries.end_barrier()
            self.st = saved
        saved.bound.add(node.name.value)

    def _s_classdef(self, node: cst.ClassDef) -> None:
        saved = self.st
        self.st = saved.copy()
        self.summaries.classes.append(node.name.value)
        try:
            self.suite(node.body)
        finally:
            self.summaries.classes.pop()
            self.st = saved
        saved.bound.add(node.name.value)


def _pairs_with(name: str, value: cst.BaseExpression) -> bool:
    """``a -= lr * grad_a``: the update names ``name``'s own gradient (``grad_a``, ``a_grad``,
    ``da``, ``d_a``), so ``name`` is a weight even if nothing else says so."""
    own = {f"grad_{name}", f"{name}_grad", f"d{name}", f"d_{name}"}
    return any(x.value in own for x in names_in(value))
