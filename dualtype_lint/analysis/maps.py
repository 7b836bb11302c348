"""Duality maps, norms and elementwise roots, recognised in user code by their form.

Steepest descent under a norm applies ``dualize(g)``; docs/design.md §3 lists the maps.
Written out in user code they look like this, and their result is primal (clean):

- ℓ∞: ``g.sign()``, ``torch.sign(g)``, ``g.sign_()`` (Lion, signSGD);
- ℓ2 / RMS / per-row norms: ``g / g.norm()``, ``g / (torch.linalg.norm(g) + eps)``,
  ``g / g.square().mean(-1, keepdim=True).sqrt()``, ``g * (c / g.norm())``, ``g.div_(n)``,
  ``F.normalize(g)`` (normalized SGD, LARS/LAMB-style trust ratios);
- RMS→RMS: U·Vᵀ from ``torch.linalg.svd`` / ``torch.svd`` / ``svd_lowrank``; a Newton–Schulz
  iteration is recognised by its structure: it starts by dividing by a norm (``X = G / (‖G‖ +
  ε)``) and only multiplies clean matrices afterwards, so its function summary returns a primal.

A division by an elementwise square root of a gradient statistic (``m / (√v + ε)``,
``g * v.rsqrt()``, ``addcdiv_(m, √v)``, Adam-atan2's ``atan2(m, √v)``) is *not* a duality
map: it is an elementwise preconditioner (Adam, Adagrad, RMSprop) and is marked ``PRECOND``
(rule DTL006). So is a division by such a statistic with no root taken (``m / (v + ε)``,
``addcdiv_(m, h + ε)``: AdaHessian, Sophia, Kate; see ``MOMENT2`` in :mod:`.values`).
Neither is a norm clamped against a bound (clipping, see :func:`clamped`).
"""

from __future__ import annotations

from functools import lru_cache

from ..names import GRAD_WORDS
from .paths import string_index
from .values import (
    CLEAN,
    INVNORM,
    INVROOT,
    MOMENT2,
    SQUARE,
    NORM_VALUE,
    NORMV,
    PRECOND,
    PRIMAL,
    PRIMAL_VALUE,
    ROOT,
    Value,
    combine,
)

SIGN = frozenset(("sign", "sgn", "_foreach_sign"))
SIGN_INPLACE = frozenset(("sign_", "sgn_", "_foreach_sign_"))
ROOTS = frozenset(("sqrt", "_foreach_sqrt"))
INV_ROOTS = frozenset(("rsqrt", "_foreach_rsqrt"))
SQUARES = frozenset(("square",))
ABS = frozenset(("abs", "absolute", "_foreach_abs"))
RECIPROCALS = frozenset(("reciprocal", "_foreach_reciprocal"))
DIVIDES = frozenset(("div", "divide", "true_divide", "_foreach_div"))
ATAN2 = frozenset(("atan2", "arctan2"))
MULTIPLIES = frozenset(("mul", "multiply", "_foreach_mul"))
NORMALIZERS = frozenset(("normalize",))  # torch.nn.functional.normalize
SVDS = frozenset(("svd", "svd_lowrank"))
QRS = frozenset(("qr",))  # Q of a QR factorization: an orthonormal basis (Dion's P)
EIGHS = frozenset(("eigh",))  # eigenvectors of a symmetric matrix: an orthonormal basis (SOAP)
REDUCTIONS = frozenset("sum mean max min amax amin std var prod logsumexp".split())


_ORTHO_WORDS = ("newtonschulz", "newton_schulz", "zeropower", "orthogonaliz", "orthogonalis", "polar_express", "msign")


@lru_cache(maxsize=8192)  # called for every method and function call the walk meets
def looks_like_orthogonalizer(name: str) -> bool:
    """A function the linter cannot see into (imported from outside the linted tree) that is
    named like an orthogonalization: ``zeropower_via_newtonschulz5``, ``orthogonalize``,
    ``newton_schulz``, ``polar_express``, ``msign``."""
    low = name.lower()
    return any(w in low for w in _ORTHO_WORDS)


def is_norm_name(name: str) -> bool:
    n = name.rstrip("_")
    return n.endswith(("norm", "norms"))


def norm_of(vals, name: str = "") -> Value:
    """A norm (``g.norm()``, ``torch.linalg.vector_norm(g)``, ``clip_grad_norm_``): a clean
    magnitude; it normalizes a gradient that is divided by it. A function named as the norm
    of gradients (``clip_grad_norm_(params)``, ``global_grad_norm(groups)``) returns one even
    when no argument is a gradient: it reads ``p.grad`` itself."""
    if any(v.taint or v.flags & NORMV for v in vals) or names_gradient(name):
        return NORM_VALUE
    return CLEAN


_CURVATURE_WORDS = frozenset(("hessian", "hess"))
# a Hessian word next to one of these names a setting or a schedule, not an estimate
_NOT_CURVATURE_WORDS = frozenset(
    "power period update every freq frequency interval samples sample num distribution fn func "
    "mode step steps count clip enabled flag flags".split()
)


@lru_cache(maxsize=4096)
def names_curvature(name: str) -> bool:
    """``hessian``, ``state['hessian']``, ``exp_hessian_diag_sq``, ``hessian_moment``: a
    Hessian(-diagonal) estimate (AdaHessian, Sophia). It is computed where the linter cannot
    follow it (Hutchinson's estimate, written into the optimizer state by a helper), so it is
    recognised by name; ``hessian_power`` or ``hessian_update_period`` are settings."""
    words = name.lower().strip("_").split("_")
    return any(w in _CURVATURE_WORDS for w in words) and not any(w in _NOT_CURVATURE_WORDS for w in words)


def names_gradient(name: str) -> bool:
    """``grad_norm``, ``get_global_gradient_norm``: a word of the name says "gradient"."""
    return any(w in GRAD_WORDS for w in name.lower().split("_"))


def reduce_of(v: Value, has_dim: bool) -> Value:
    """``g.sum()`` is a scalar (clean); ``g.sum(dim=0)`` is still a gradient (a bias gradient is
    ``grad_out.sum(0)``), but a magnitude if a gradient is divided by it."""
    if not v.taint:
        return NORM_VALUE if v.flags & NORMV else combine((v,))
    if not has_dim:
        return NORM_VALUE
    return Value(True, flags=NORMV | (v.flags & PRECOND))


# torch's clamps (the builtins min/max are handled with the calls of builtins)
CLAMPS = frozenset(("clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum"))


def is_eps_guard(node) -> bool:
    """A bound that only guards against division by zero: a literal below 1e-3 or a name
    spelled with ``eps`` (``eps``, ``group['eps']``, ``self.eps``)."""
    import libcst as cst

    x = float_literal(node)
    if x is not None:
        return abs(x) < 1e-3
    t = type(node)
    if t is cst.Name:
        return "eps" in node.value.lower()
    if t is cst.Attribute:
        return "eps" in node.attr.value.lower()
    if t is cst.Subscript:
        key = string_index(node)
        return key is not None and "eps" in key.lower()
    return False


def clamped(v: Value, bounds) -> Value:
    """A norm (or ``c / ‖g‖``) clamped against a bound: ``min(c / ‖g‖, 1)``,
    ``(‖g‖ / c).clamp(min=1)``, ``max(1, ‖g‖ / c)``. That is gradient clipping, not
    normalization: below the bound the gradient passes unchanged, so what it scales stays a
    raw gradient. A bound that only guards against zero (``max(‖g‖, eps)``) keeps the norm."""
    if not v.flags & (NORMV | INVNORM) or all(is_eps_guard(b) for b in bounds):
        return v
    return Value(v.taint, v.weight_ref, v.weight_derived, None, v.flags & ~(NORMV | INVNORM))


def root_of(v: Value) -> Value:
    """``√x``: of a norm, a norm; of a gradient statistic (Adam's v, a running average of
    squared norms), an elementwise root."""
    if v.flags & MOMENT2 and not v.taint:
        return Value(flags=MOMENT2)
    if v.flags & NORMV:
        return Value(v.taint, flags=NORMV)
    if v.taint:
        return Value(True, flags=ROOT)
    return combine((v,))


def rsqrt_of(v: Value) -> Value:
    if v.flags & MOMENT2 and not v.taint:
        return Value(flags=MOMENT2)
    if v.flags & NORMV:
        return Value(flags=INVNORM)
    if v.taint:
        return Value(True, flags=INVROOT)
    return combine((v,))


def power(v: Value, exponent: float | None) -> Value:
    """``x ** e``. A power between 0 and 1 of a gradient statistic is a root (√v, MADGRAD's
    cube root, Padam's partial power), between -1 and 0 an inverse root. An exponent that is
    no constant (``v.pow(group['p'])``) may be either: a gradient divided or multiplied by
    that power of a statistic is preconditioned elementwise all the same."""
    if exponent is None:
        if v.taint and not v.flags & NORMV:
            return Value(True, flags=ROOT | INVROOT)
        return combine((v,))
    if 0 < exponent < 1:
        return root_of(v)
    if -1 < exponent < 0:
        return rsqrt_of(v)
    if exponent == 2.0 and v.taint and not v.flags & NORMV:
        return Value(True, flags=SQUARE)  # g² is quadratic in the gradient, not a norm
    return combine((v,))


def reciprocal_of(v: Value) -> Value:
    """``1 / x``: of a root an inverse root (LAMB's ``_foreach_reciprocal_(√v + ε)``), and back;
    of a norm its reciprocal (a trust ratio's denominator)."""
    if v.taint and v.flags & (ROOT | INVROOT) and not v.flags & NORMV:
        swapped = (ROOT if v.flags & INVROOT else 0) | (INVROOT if v.flags & ROOT else 0)
        return Value(True, flags=swapped)
    return divide(CLEAN, v)


def abs_of(v: Value) -> Value:
    """``|g|``: like ``g²``, a magnitude of this step, not yet a statistic. A buffer it is
    accumulated into by a running maximum is one (Adamax's ``u = max(β·u, |g|)``, the ∞-norm
    analogue of Adam's second moment, see ``MOMENT2``)."""
    if v.taint and not v.flags & (NORMV | PRECOND | ROOT | INVROOT):
        return Value(True, flags=SQUARE)
    return combine((v,))  # |m/√v| is as preconditioned as m/√v (Grams)


def divide(num: Value, den: Value) -> Value:
    if den.taint and den.flags & ROOT and not num.flags & NORMV:
        return Value(True, flags=PRECOND)  # m / √v
    if den.flags & MOMENT2 and num.taint and not num.flags & NORMV:
        return Value(True, flags=PRECOND)  # m / (v + ε), m / (ρ·h + ε): no root, still elementwise
    if num.flags & PRECOND and not den.taint:
        return Value(True, flags=PRECOND)  # normalizing m/√v leaves it a preconditioned update
    if num.taint and not num.flags & NORMV:
        if den.flags & NORMV:
            return PRIMAL_VALUE  # g / ‖g‖
    elif not num.taint and den.flags & NORMV and not den.taint:
        return Value(flags=INVNORM)  # c / ‖g‖ (a trust ratio)
    return combine((num, den))


def atan2(y: Value, x: Value) -> Value:
    """``atan2(m, √v)`` (Adam-atan2) is m/√v bounded elementwise: as elementwise a
    preconditioner as the quotient. It is never a duality map: ``atan2(g, ‖g‖)`` stays raw."""
    q = divide(y, x)
    return q if q.flags & PRECOND else combine((y, x))


def multiply(a: Value, b: Value) -> Value:
    for x, y in ((a, b), (b, a)):
        if x.taint and not x.flags & (NORMV | PRECOND):
            if y.flags & INVNORM and not y.taint:
                return PRIMAL_VALUE  # g * (c / ‖g‖)
            if y.taint and y.flags & (INVROOT | PRECOND):
                return Value(True, flags=PRECOND)  # g * v.rsqrt(), m * (lr / √v)
    if a.taint and b.taint and not (a.flags | b.flags) & (NORMV | PRECOND | INVROOT):
        # g * g, (g - m) * (g - m): quadratic in the gradient (√s · √q stays a root as well)
        return Value(True, flags=combine((a, b)).flags | SQUARE)
    if a.flags & PRIMAL and not a.taint and not b.taint:
        return PRIMAL_VALUE if not b.weight_ref else combine((a, b))
    if b.flags & PRIMAL and not b.taint and not a.taint:
        return PRIMAL_VALUE if not a.weight_ref else combine((a, b))
    return combine((a, b))


def svd_of(v: Value) -> Value:
    """``U, S, Vh = svd(g)``: U and Vh are orthogonal factors (U·Vhᵀ is the RMS→RMS duality
    map); S carries the gradient's magnitudes."""
    s = Value(v.taint, flags=NORMV if v.taint else 0)
    return Value(v.taint, False, False, (PRIMAL_VALUE, s, PRIMAL_VALUE), 0)


def qr_of(v: Value) -> Value:
    return Value(v.taint, False, False, (PRIMAL_VALUE, Value(v.taint)), 0)


def eigh_of(v: Value) -> Value:
    return Value(v.taint, False, False, (Value(v.taint, flags=NORMV if v.taint else 0), PRIMAL_VALUE), 0)


def exponent(node) -> float | None:
    """A constant exponent: a number, or numbers joined by + - * / (``1 / 3``, ``-1.0 / 4``)."""
    import libcst as cst

    if type(node) is cst.BinaryOperation:
        a, b, op = exponent(node.left), exponent(node.right), type(node.operator)
        if a is None or b is None:
            return None
        if op is cst.Add:
            return a + b
        if op is cst.Subtract:
            return a - b
        if op is cst.Multiply:
            return a * b
        if op is cst.Divide and b != 0:
            return a / b
        return None
    if type(node) is cst.UnaryOperation and type(node.operator) is cst.Minus:
        x = exponent(node.expression)
        return None if x is None else -x
    return float_literal(node)


def float_literal(node) -> float | None:
    """The number in ``0.5``, ``-0.5``, ``2``, ``(0.5)``, else None."""
    import libcst as cst

    neg = False
    while type(node) is cst.UnaryOperation and type(node.operator) is cst.Minus:
        neg = not neg
        node = node.expression
    if type(node) in (cst.Float, cst.Integer):
        try:
            x = float(node.value.replace("_", ""))
        except ValueError:
            return None
        return -x if neg else x
    return None
