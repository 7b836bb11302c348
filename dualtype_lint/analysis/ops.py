"""Pure operations on abstract values: arithmetic, methods and in-place maps."""

from __future__ import annotations

from typing import Sequence

import libcst as cst

from . import maps
from .tables import COPY_METHODS, META_KWARGS
from .values import INVNORM, MOMENT2, NORMV, PRECOND, PRIMAL_VALUE, SQUARE, Value, combine as _combine


def is_copy(node: cst.BaseExpression) -> bool:
    """``p.float()``, ``p.detach().clone()``, ``torch.stack(params)``: a copy of weights."""
    if type(node) is not cst.Call:
        return False
    f = node.func
    if type(f) is cst.Attribute:
        return f.attr.value in COPY_METHODS
    return False


MAXIMA = frozenset(("maximum", "maximum_", "max", "fmax"))
_WRITE_BACK = frozenset({"copy_", "set_", "_foreach_copy_"})


def writes_back(fn: cst.FunctionDef) -> frozenset[str]:
    """The names ``fn`` writes back into other tensors: read in the source of ``q.copy_(x)``,
    ``q.set_(x)``, ``torch._foreach_copy_(qs, xs)``, ``q.data = x``, or in what a loop with such a
    write iterates over (``for q, x in zip(params, chunk.unbind(0)): q.copy_(x)``). An updated
    copy of a weight is a master copy only if it is written back (``p32 = p.float();
    p32.add_(u); p.copy_(p32)``); otherwise it is scratch space (``update = p.clone();
    update.addcdiv_(m, d)``), a buffer like any other."""
    from .branches import fast_children

    out: set[str] = set()

    def walk(root: cst.CSTNode) -> bool:  # adds the names written back; did it write any?
        found = False
        stack = [root]
        while stack:
            n = stack.pop()
            t = type(n)
            if t is cst.Call and type(n.func) is cst.Attribute and n.func.attr.value in _WRITE_BACK:
                out.update(x.value for a in n.args for x in names_in(a.value))
                found = True
            elif t is cst.Assign and any(
                type(g.target) is cst.Attribute and g.target.attr.value == "data" for g in n.targets
            ):
                out.update(x.value for x in names_in(n.value))
                found = True
            elif t is cst.For and walk(n.body):
                out.update(x.value for x in names_in(n.iter))
                found = True
                continue
            stack.extend(fast_children(n))
        return found

    walk(fn.body)
    return frozenset(out)


def data_args(args: Sequence[cst.Arg], vals: list[Value]) -> list[Value]:
    """The values of the arguments that carry data (see ``Analyzer._argvals``)."""
    return [v for a, v in zip(args, vals) if a.keyword is None or a.keyword.value not in META_KWARGS]


def names_in(node: cst.CSTNode, limit: int = 200):
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


def binop(op: type, left: Value, right: Value, right_node: cst.BaseExpression) -> Value:
    if op is cst.Divide:
        return maps.divide(left, right)
    if op is cst.Multiply or op is cst.MatrixMultiply:
        return maps.multiply(left, right)
    if op is cst.Power:
        return maps.power(left, maps.exponent(right_node))
    return _combine((left, right))


def method_map(mname: str, recv: Value, vals: list[Value], args) -> Value | None:
    """``g.sign()``, ``g.norm()``, ``v.sqrt()``, ``a.div(b)``, ``g.svd()`` (see analysis.maps)."""
    if mname in maps.SIGN or mname in maps.SIGN_INPLACE:
        return PRIMAL_VALUE
    if mname == "sparse_mask":
        return _combine((recv,))  # p.sparse_mask(grad): the values of p where grad has entries
    if maps.is_norm_name(mname):
        return maps.norm_of([recv])
    if mname in maps.ROOTS:
        return maps.root_of(recv)
    if mname in maps.INV_ROOTS:
        return maps.rsqrt_of(recv)
    if mname == "pow" and args:
        return maps.power(recv, maps.exponent(args[0].value))
    if mname in maps.SQUARES:
        return maps.power(recv, 2.0)
    if mname in maps.ABS:
        return maps.abs_of(recv)
    if mname in maps.RECIPROCALS:
        return maps.reciprocal_of(recv)
    if vals and mname in maps.DIVIDES:
        return maps.divide(recv, vals[0])
    if vals and mname in maps.ATAN2:
        return maps.atan2(recv, vals[0])
    if vals and mname in maps.MULTIPLIES:
        return maps.multiply(recv, vals[0])
    if mname in maps.SVDS:
        return maps.svd_of(recv)
    if mname in ("addcdiv", "addcmul") and len(vals) >= 2:  # x0.addcdiv(s, rms): x0 + s/rms
        return _combine((recv, written_value(mname + "_", vals)))
    if mname in maps.CLAMPS and recv.flags & (NORMV | INVNORM):
        return maps.clamped(recv, [a.value for a in args])
    return None


def inplace_map(base: str, tv: Value, vals: list[Value], args) -> Value | None:
    """What an in-place map makes of a buffer: ``u.sign_()`` is primal, ``u.div_(‖u‖)``
    normalizes it, ``d.sqrt_()`` makes a denominator, ``b.copy_(x)`` is ``x``."""
    if base in ("sign_", "sgn_"):
        return PRIMAL_VALUE
    if base == "sqrt_":
        return maps.root_of(tv)
    if base == "rsqrt_":
        return maps.rsqrt_of(tv)
    if vals and (base in maps.ROOTS or base in maps.INV_ROOTS):  # torch.rsqrt(v, out=u)
        return maps.root_of(vals[0]) if base in maps.ROOTS else maps.rsqrt_of(vals[0])
    if base == "pow_" and args:
        return maps.power(tv, maps.exponent(args[0].value))
    if base == "square_":
        return maps.power(tv, 2.0)
    if base in ("abs_", "absolute_"):
        return maps.abs_of(tv)
    if base == "reciprocal_":
        return maps.reciprocal_of(tv)
    if base == "div_" and vals and not tv.weight_ref:
        return maps.divide(tv, vals[0])
    if base in ("atan2_", "arctan2_") and vals and not tv.weight_ref:
        return maps.atan2(tv, vals[0])
    if base == "mul_" and vals and not tv.weight_ref:
        m = maps.multiply(tv, vals[0])
        if not vals[0].taint or m.flags & PRECOND:  # steps.mul_(m), steps = lr / √v
            return m
    if base == "copy_" and vals:
        return vals[0]
    if base in ("clamp_", "clamp_min_", "clamp_max_", "clip_") and tv.flags & (NORMV | INVNORM):
        return maps.clamped(tv, [a.value for a in args])
    if base in ("add_", "sub_", "clamp_", "clamp_min_", "clamp_max_") and not any(v.taint for v in vals):
        return tv if tv.flags else None
    return None


def written_value(base: str, vals: list[Value]) -> Value:
    """The value an in-place update writes: ``addcdiv_(m, d)`` writes m/d."""
    if base == "addcdiv_" and len(vals) >= 2:
        return _combine((maps.divide(vals[0], vals[1]), *vals[2:]))
    if base == "addcmul_" and len(vals) >= 2:
        return _combine((maps.multiply(vals[0], vals[1]), *vals[2:]))
    if base in MAXIMA and any(v.taint and v.flags & (SQUARE | MOMENT2) for v in vals):
        # max(β·u, |g|): a running maximum of magnitudes, whatever the buffer held before
        return Value(True, flags=SQUARE)
    return _combine(vals)
