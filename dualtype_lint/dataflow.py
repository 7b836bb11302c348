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

from .analysis.binding import Binding
from .analysis.calls import Calls
from .analysis.expressions import Expressions
from .analysis.paths import dotted, key_of  # noqa: F401 - re-exported
from .analysis import expressions as _expressions, statements as _statements
from .analysis.reporting import Finding, Reporting  # noqa: F401 - Finding re-exported
from .analysis.statements import Statements
from .analysis.summaries import Summaries
from .analysis.values import CLEAN, TAINT, WEIGHT, State, Value  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .rules.base import Rule


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


class Analyzer(Reporting, Expressions, Calls, Binding, Statements):
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
        self.walked_fns: set[int] = set()  # functions the main walk has been through
        self.grad_fns: set[int] = set()  # ... and those in which it met a gradient source
        # functions with parameters named like gradients: (node, enclosing class)
        self._grad_param_fns: dict[int, tuple[cst.FunctionDef, str | None]] = {}
        self._write_back: dict[int, frozenset[str]] = {}  # id(function) -> writes_back(function)
        self.dualizers = dualizers or Dualizers()
        self.imports: dict[str, str] = {}  # local name -> dotted origin
        self.imports_version = 0  # changes of imports
        # <name> of every d<name> / d_<name> looked up as a hand-written gradient (its binding
        # matters: see Statements._loop)
        self.rest_queries: set[str] = set()
        self.taint_writes = 0  # calls of taint_target, the only reader of State.aliases
        self.findings: dict[tuple[int, str], Finding] = {}
        self.quiet = False
        self.carried: set[str] = set()  # attributes a weight carries a gradient in (p.update = -lr * g)
        self.chain: cst.Call | None = None  # the outermost call of an in-place chain being walked
        self.splits = 0  # correlated-branch splits in progress (analysis.branches)
        self.fn_nodes: list[cst.FunctionDef] = []  # the functions the walk is inside, innermost last
        self.declared: dict[int, frozenset[str]] = {}  # function -> its global/nonlocal names
        self.correlations: dict[int, tuple | None] = {}  # id(if) -> branches.correlated(...)
        self.st = State()
        self._h_inplace = [r for r in rules if r.handles("on_inplace")]
        self._h_aug = [r for r in rules if r.handles("on_augassign")]
        self._h_assign = [r for r in rules if r.handles("on_assign")]
        self._h_coll = [r for r in rules if r.handles("on_collection")]

    def resolve(self, func: cst.BaseExpression) -> str | None:
        d = dotted(func)
        if d is None:
            return None
        return self.resolve_dotted(d)

    def resolve_dotted(self, d: str) -> str:
        """:meth:`resolve` of the dotted name ``d`` of an expression."""
        head, _, rest = d.partition(".")
        origin = self.imports.get(head)
        if origin is None:
            return d
        return f"{origin}.{rest}" if rest else origin

    def record_import(self, node: cst.Import | cst.ImportFrom) -> None:
        self.imports_version += 1
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


EXPR_HANDLERS: dict[type, Callable[[Analyzer, cst.CSTNode], Value]] = _expressions.EXPR_HANDLERS
EXPR_HANDLERS.update({
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
})
if hasattr(cst, "TemplatedString"):
    EXPR_HANDLERS[cst.TemplatedString] = Analyzer._e_const
EXPR_HANDLERS[cst.StarredElement] = lambda a, n: a.expr(n.value)
EXPR_HANDLERS[cst.Element] = lambda a, n: a.expr(n.value)
EXPR_HANDLERS[cst.Arg] = lambda a, n: a.expr(n.value)

STMT_HANDLERS: dict[type, Callable[[Analyzer, cst.CSTNode], None]] = _statements.STMT_HANDLERS
STMT_HANDLERS.update({
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
})
