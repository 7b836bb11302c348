"""Coefficients of the odd polynomials ``p(x) = a·x + b·x³ + c·x⁵`` iterated on singular values.

Every Newton–Schulz-type kernel applies ``X ← a·X + b·(XXᵀ)X + c·(XXᵀ)²X``, which maps each
singular value σ of ``X`` to ``p(σ)`` and leaves the singular vectors alone. So a schedule is
judged entirely by the scalar map σ ↦ p_T(…p_1(σ)) on the interval ``[ℓ, 1]`` that the
normalization guarantees; :func:`scalar_trace` runs that map and reports the worst deviation
from 1 after each step.

Polar-Express-style schedule (Amsel et al. 2025, derived here independently): at step t the
singular values are known to lie in ``[ℓ_t, u_t]``; take the odd quintic that minimizes
``max |1 − p(x)|`` over that interval (a Remez exchange on four alternation points, solved
below with the standard library only), then ``[ℓ_{t+1}, u_{t+1}] = [1 − E_t, 1 + E_t]``.
Each polynomial is divided by a small safety factor so rounding (bf16 is ~0.4 % per entry)
never pushes a singular value past the point where the next polynomial turns down.
"""

from __future__ import annotations

import math
from functools import lru_cache

from dualtype.errors import ConfigError

__all__ = [
    "CUBIC",
    "QUINTIC_MUON",
    "optimal_quintic",
    "polar_express_schedule",
    "scalar_trace",
]

Coeffs = tuple[float, float, float]

# The paper's cubic Newton–Schulz: p(x) = 1.5x − 0.5x³ (converges for σ in (0, √3)).
CUBIC: Coeffs = (1.5, -0.5, 0.0)
# Muon's quintic (Jordan et al.): fast initial slope, does not converge to 1.
QUINTIC_MUON: Coeffs = (3.4445, -4.7750, 2.0315)


def _solve4(A: list[list[float]], y: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting on a 4×4 system (stdlib only)."""
    n = len(y)
    M = [row[:] + [y[i]] for i, row in enumerate(A)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(M[r][col]))
        M[col], M[piv] = M[piv], M[col]
        for r in range(col + 1, n):
            f = M[r][col] / M[col][col]
            for k in range(col, n + 1):
                M[r][k] -= f * M[col][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (M[r][n] - sum(M[r][k] * x[k] for k in range(r + 1, n))) / M[r][r]
    return x


def _critical_points(a: float, b: float, c: float) -> list[float]:
    """Positive x with p'(x) = a + 3b·x² + 5c·x⁴ = 0 (a quadratic in y = x²)."""
    A, B, C = 5.0 * c, 3.0 * b, a
    if A == 0.0:
        return [math.sqrt(-C / B)] if B != 0.0 and -C / B > 0.0 else []
    disc = B * B - 4.0 * A * C
    if disc < 0.0:
        return []
    s = math.sqrt(disc)
    ys = sorted(((-B - s) / (2.0 * A), (-B + s) / (2.0 * A)))
    return [math.sqrt(y) for y in ys if y > 0.0]


@lru_cache(maxsize=256)
def optimal_quintic(lo: float, hi: float) -> tuple[Coeffs, float]:
    """The odd quintic minimizing ``max_{x∈[lo,hi]} |1 − p(x)|``, and that minimal error E.

    The optimum equioscillates at lo, the local max q, the local min r of p, and hi:
    ``p(lo) = 1−E, p(q) = 1+E, p(r) = 1−E, p(hi) = 1+E``. Remez exchange: solve the 4×4 linear
    system for (a, b, c, E) on the current points, move q, r to the critical points of p,
    repeat until E settles.
    """
    if not 0.0 < lo <= hi:
        raise ConfigError(f"optimal_quintic needs 0 < lo <= hi, got [{lo}, {hi}]")
    if lo / hi > 1.0 - 1e-6:
        # Degenerate interval: the limit is the degree-5 Taylor (Newton–Schulz) polynomial of
        # x·(x²)^(-1/2) around hi, which is flat to second order there.
        return (15 / 8 / hi, -10 / 8 / hi**3, 3 / 8 / hi**5), 0.0
    q, r = (3 * lo + hi) / 4, (lo + 3 * hi) / 4
    E_prev = math.inf
    for _ in range(100):
        pts, signs = (lo, q, r, hi), (1.0, -1.0, 1.0, -1.0)
        A = [[x, x**3, x**5, s] for x, s in zip(pts, signs)]
        a, b, c, E = _solve4(A, [1.0, 1.0, 1.0, 1.0])
        crit = _critical_points(a, b, c)
        if len(crit) == 2 and lo < crit[0] < crit[1] < hi:
            q, r = crit
        if abs(E - E_prev) <= 1e-15:
            break
        E_prev = E
    return (a, b, c), abs(E)


@lru_cache(maxsize=64)
def polar_express_schedule(
    lower: float = 1e-3, steps: int = 8, safety: float = 1.01, cushion: float = 0.0
) -> tuple[Coeffs, ...]:
    """Greedy minimax schedule for singular values initially in ``[lower, 1]``.

    ``safety`` > 1 designs each step (but the last) on the interval widened to
    ``[lo, hi·safety]``, so values pushed slightly above the bound by rounding stay inside
    the region where the polynomial still maps them near 1; the last step is designed on the
    exact interval so the output is centred on 1. ``cushion`` > 0 designs on
    ``[max(lo, cushion·hi), hi]``: a milder first polynomial that does not fold large
    singular values down to ~lo (which in bf16 amplified rounding error: measured 0.045 →
    0.013 relative error on a Gaussian 1024×4096 at cushion 0.02–0.03); values below the
    cushion are still increased (p is increasing on [0, q]).
    """
    lo, hi = float(lower), 1.0
    out = []
    for t in range(steps):
        widen = safety if t < steps - 1 else 1.0
        (a, b, c), E = optimal_quintic(max(lo, cushion * hi), hi * widen)
        out.append((a, b, c))
        # Image of [lo, hi] under p: the minimum is p(lo) (= 1 − E unless the cushion lifted
        # the design interval above lo, where p is still increasing); the maximum is 1 + E.
        lo, hi = min(a * lo + b * lo**3 + c * lo**5, 1.0 - E), 1.0 + E
    return tuple(out)


def scalar_trace(
    coeffs: tuple[Coeffs, ...], lower: float, upper: float = 1.0, points: int = 2001
) -> list[tuple[float, float]]:
    """Run the scalar map on a log-spaced grid of σ in ``[lower, upper]``; after each step
    return ``(min σ, max σ)`` over the grid. The worst deviation from 1 is
    ``max(1 − min, max − 1)``."""
    la, lb = math.log(lower), math.log(upper)
    xs = [math.exp(la + (lb - la) * i / (points - 1)) for i in range(points)]
    out = []
    for a, b, c in coeffs:
        xs = [a * x + b * x**3 + c * x**5 for x in xs]
        out.append((min(xs), max(xs)))
    return out
