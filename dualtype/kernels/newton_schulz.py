"""Iterative polar-factor kernels: odd matrix polynomials ``X ← (aI + b·XXᵀ + c·(XXᵀ)²) X``.

Shapes: the input ``G`` is ``[..., m, n]``; the kernels work on ``X`` of shape ``[B, r, k]``
with ``r ≤ k`` (the input is transposed when ``m > n``) so every Gram matrix ``XXᵀ`` is the
small ``r × r`` one. Leading dimensions are flattened into one batch ``B`` and every product
is a single ``bmm``/``baddbmm`` over the whole batch.

Normalization (scale invariant, zero safe). ``X₀ = G / ‖G‖_F`` puts all singular values in
``[0, 1]``; a zero matrix has ‖G‖_F = 0 and the division uses ``max(‖G‖_F, tiny)`` with
``tiny`` the smallest normal float32, so it stays exactly zero and any non-zero scale
normalizes identically: norms that overflow (huge finite entries) or may have underflowed
(entries below ~1e-19) are recomputed as ``amax·‖X/amax‖_F``, in eager mode only; that
path costs nothing on ordinary input (one scalar check decides). The tuned kernels then tighten the bound
for free: the first step computes ``S = XXᵀ`` and ``S²`` anyway, and
``σ_max ≤ ‖S²‖_F^{1/4} = (Σσ⁸)^{1/8}``, a far tighter bound than ``(Σσ²)^{1/2}`` (for a
Gaussian 1024×4096 matrix the smallest singular value rises from 0.016 to 0.19 of the
bound). The rescaling is folded into the first polynomial, so it costs no extra pass over X.
"""

from __future__ import annotations

from typing import Callable

import torch

from dualtype.errors import NonFiniteError
from dualtype.kernels.coefficients import CUBIC
from dualtype.kernels.dtypes import accumulation_dtype

Coeffs = tuple[float, float, float]

_TINY = torch.finfo(torch.float32).tiny
# Below these Frobenius norms the sum of squares may have lost precision to underflow.
_SMALL = {torch.float32: 1e-17, torch.float64: 1e-150}


def _floor(work: torch.dtype) -> float:
    """Lower clamp of a Gram norm (a zero matrix stays zero): the smallest normal number of the
    working dtype, at least float32's. With float32's alone, 1/s² overflows float16 to Inf
    and a zero float16 matrix would come back NaN (0·Inf)."""
    return max(_TINY, torch.finfo(work).tiny)


def prepare(G: torch.Tensor, work_dtype: torch.dtype, check_finite: bool):
    """Flatten the batch, transpose to ``r ≤ k``, normalize by ‖·‖_F and cast.

    Returns ``(X0, transposed)`` with ``X0`` of shape ``[B, r, k]`` in ``work_dtype``.
    The Frobenius norms are accumulated in float32 (float64 for float64 input), and the one
    finiteness check of the whole call is made on them: a NaN or Inf anywhere in ``G`` makes
    its matrix's norm non-finite.
    """
    m, n = G.shape[-2], G.shape[-1]
    X = G.reshape(-1, m, n)
    transposed = m > n
    if transposed:
        X = X.mT
    acc = accumulation_dtype(G.dtype)
    nrm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True, dtype=acc)
    if torch.compiler.is_compiling() or X.device.type == "meta":  # no host sync (meta: no values at all)
        if check_finite and X.device.type != "meta":
            torch._assert_async(torch.isfinite(nrm).all(), "orthogonalize: input holds NaN or Inf")
    else:
        # One host sync: is any norm non-finite, or so small that its squares may have
        # underflowed (zero matrices land here too)? Only then take the careful path.
        fine = torch.isfinite(nrm) & (nrm > _SMALL[acc])
        if not bool(fine.all()):
            return _prepare_careful(G, X, fine, nrm, acc, check_finite).to(work_dtype), transposed
    inv = 1.0 / nrm.clamp_min(torch.finfo(acc).tiny)  # float64 keeps its own range
    if work_dtype == torch.bfloat16 and acc == torch.float32:
        # fp32/bf16 → bf16: cast first, then scale in bf16 (two cheap passes, no fp32 copy);
        # bf16 has float32's exponent range, so the cast cannot overflow.
        return X.to(work_dtype) * inv.to(work_dtype), transposed
    return (X.to(acc) * inv).to(work_dtype), transposed


def _prepare_careful(G, X, fine, nrm, acc, check_finite: bool) -> torch.Tensor:
    """``X/‖X‖_F`` where the plain norm may have under- or overflowed: ``Y = X/amax`` has
    entries in [-1, 1] and ``‖Y‖_F ∈ [1, √(rk)]``, so ``Y/‖Y‖_F`` is computed without a
    reciprocal of a tiny number (1/denormal overflows to Inf, and then NaN). A matrix whose amax is
    below the smallest normal number of ``acc`` is *effectively zero* and maps to zero."""
    amax = X.abs().amax(dim=(-2, -1), keepdim=True).to(acc)
    if check_finite and not bool(torch.isfinite(amax).all()):
        bad = (~torch.isfinite(amax)).sum().item()
        raise NonFiniteError(
            f"orthogonalize: input of shape {tuple(G.shape)} holds NaN or Inf "
            f"({bad} of {amax.numel()} matrices affected); refusing to return NaN. "
            "Check the gradient for overflow upstream."
        )
    live = ~(amax < torch.finfo(acc).tiny)  # NaN stays live: check_finite=False propagates it
    Y = X.to(acc) / torch.where(live, amax, torch.ones_like(amax))
    ny = torch.linalg.vector_norm(Y, dim=(-2, -1), keepdim=True)
    careful = torch.where(live, Y / ny.clamp_min(1.0), torch.zeros_like(Y))
    plain = X.to(acc) * (1.0 / nrm.clamp_min(torch.finfo(acc).tiny))
    return torch.where(fine, plain, careful)


def finish(X: torch.Tensor, G: torch.Tensor, transposed: bool) -> torch.Tensor:
    if transposed:
        X = X.mT
    return X.to(G.dtype).reshape(G.shape)


def _add_identity_(P: torch.Tensor, a) -> torch.Tensor:
    """P ← P + a·I on the last two dims (``a`` a float or a ``[B, 1, 1]`` tensor)."""
    d = P.diagonal(dim1=-2, dim2=-1)
    d.add_(a if isinstance(a, float) else a.reshape(-1, 1))
    return P


def _gram_bound(S2: torch.Tensor) -> torch.Tensor:
    """``s = ‖S²‖_F^{1/4} ≥ σ_max(X)`` per batch entry, as a float32 ``[B, 1, 1]`` tensor,
    clamped away from zero so a zero matrix stays zero."""
    acc = accumulation_dtype(S2.dtype)
    f = torch.linalg.vector_norm(S2, dim=(-2, -1), keepdim=True, dtype=acc)
    return f.clamp_min(_floor(S2.dtype)).pow(0.25)


def tightened_polynomial(S: torch.Tensor, S2: torch.Tensor, coeffs: Coeffs):
    """First step with the tightened bound folded in, from ``S = XXᵀ`` and ``S² ``.

    With ``s = ‖S²‖_F^{1/4}``, ``R = S/s² = (X/s)(X/s)ᵀ``, the step on ``X/s`` is
    ``P·(X/s)`` with ``P = a·I + b·R + c·R²``. Returns ``(P, 1/s, R, R²)``.
    """
    a, b, c = coeffs
    s = _gram_bound(S2)
    inv_s2 = (1.0 / (s * s)).to(S.dtype)
    R = S * inv_s2
    R2 = S2 * (inv_s2 * inv_s2)
    P = R * b + R2 * c if c != 0.0 else R * b
    P = _add_identity_(P, a)
    return P, (1.0 / s).to(S.dtype), R, R2


def first_polynomial(X: torch.Tensor, coeffs: Coeffs):
    """:func:`tightened_polynomial` of ``X``: returns ``(P, 1/s, R, R²)``."""
    S = torch.bmm(X, X.mT)
    return tightened_polynomial(S, torch.bmm(S, S), coeffs)


def first_polynomial_cubic(X: torch.Tensor, coeffs: Coeffs):
    """Cubic first step: only ``S`` is available, so the bound is ``‖S‖_F^{1/2} = (Σσ⁴)^{1/4}``."""
    a, b, _ = coeffs
    S = torch.bmm(X, X.mT)
    acc = accumulation_dtype(S.dtype)
    f = torch.linalg.vector_norm(S, dim=(-2, -1), keepdim=True, dtype=acc)
    s = f.clamp_min(_floor(S.dtype)).sqrt()
    P = _add_identity_(S * (b / (s * s)).to(S.dtype), a) * (1.0 / s).to(S.dtype)
    return P


def polynomial(X: torch.Tensor, coeffs: Coeffs) -> torch.Tensor:
    """``P = aI + b·S + c·S²`` with ``S = XXᵀ`` (one fused ``baddbmm`` for the quintic part)."""
    a, b, c = coeffs
    S = torch.bmm(X, X.mT)
    P = torch.baddbmm(S, S, S, beta=b, alpha=c) if c != 0.0 else S * b
    return _add_identity_(P, a)


def iterate(X: torch.Tensor, schedule: list[Coeffs], tighten: bool) -> torch.Tensor:
    """Apply ``X ← P_t X`` for each step of ``schedule`` (standard space)."""
    for t, coeffs in enumerate(schedule):
        if t == 0 and tighten:
            P, inv_s, _, _ = first_polynomial(X, coeffs)
            P = P * inv_s
        else:
            P = polynomial(X, coeffs)
        X = torch.bmm(P, X)
    return X


def _fused_polynomial(R: torch.Tensor, coeffs: Coeffs) -> torch.Tensor:
    """``aI + bR + cR²`` with the quintic part in one ``baddbmm`` (the Gram segments)."""
    a, b, c = coeffs
    P = torch.baddbmm(R, R, R, beta=b, alpha=c) if c != 0.0 else R * b
    return _add_identity_(P, a)


def _summed_polynomial(R: torch.Tensor, coeffs: Coeffs) -> torch.Tensor:
    """``aI + bR + cR²`` as a sum of products (the full Gram iteration). It differs from
    :func:`_fused_polynomial` only in rounding; each path keeps the form it was measured with."""
    a, b, c = coeffs
    return _add_identity_(R * b + torch.bmm(R, R) * c, a)


def gram_steps(X: torch.Tensor, schedule: list[Coeffs], tighten: bool = False,
               gram_polynomial: Callable[[torch.Tensor, Coeffs], torch.Tensor] = _fused_polynomial) -> torch.Tensor:
    """Steps of ``schedule`` from ``X`` in Gram space: ``S = XXᵀ``, ``P = aI + bR + cR²``,
    ``Q ← PQ``, ``R ← PRP``; returns ``Q X``. With ``tighten`` the first step also applies
    the ``‖S²‖_F^{1/4}`` normalization (folded into Q, as in :func:`first_polynomial`)."""
    R = torch.bmm(X, X.mT)
    Q = None
    T = len(schedule)
    for t, coeffs in enumerate(schedule):
        if t == 0 and tighten:
            P, inv_s, R, _ = tightened_polynomial(R, torch.bmm(R, R), coeffs)
            Q = P * inv_s
        else:
            P = gram_polynomial(R, coeffs)
            Q = P if Q is None else torch.bmm(P, Q)
        if t < T - 1:
            R = torch.bmm(torch.bmm(P, R), P)
    return torch.bmm(Q, X)


def iterate_segments(
    X: torch.Tensor, schedule: list[Coeffs], segments: list[int], tighten: bool = True
) -> torch.Tensor:
    """Run ``schedule`` in consecutive segments, each evaluated in Gram space (a segment of
    one step is exactly a standard step). A segment of L steps costs 2 big + (4L − 3) small
    products instead of 2L big + L small."""
    assert sum(segments) == len(schedule)
    t = 0
    for L in segments:
        X = gram_steps(X, schedule[t : t + L], tighten=tighten and t == 0)
        t += L
    return X


def iterate_cubic(X: torch.Tensor, max_steps: int, tol: float | None) -> torch.Tensor:
    """Cubic Newton–Schulz ``X ← X + ½(I − XXᵀ)X`` until ``‖ΔX‖_F ≤ tol·‖X‖_F`` or max_steps.

    The stopping test costs one reduction and one host sync per step; under ``torch.compile``
    (no data-dependent control flow) it is skipped and exactly ``max_steps`` steps run.
    """
    a, b, _ = CUBIC  # a + b = 1, so aX + b·SX = X + (−b)·(I − S)X
    check = tol is not None and not torch.compiler.is_compiling() and X.device.type != "meta"
    for t in range(max_steps):
        if t == 0:
            P = first_polynomial_cubic(X, CUBIC)
            X = torch.bmm(P, X)
            continue
        S = torch.bmm(X, X.mT)
        D = torch.baddbmm(X, S, X, beta=1.0, alpha=-1.0)  # (I − S)X
        X = X + -b * D
        if check:
            acc = accumulation_dtype(X.dtype)
            d = torch.linalg.vector_norm(D, dtype=acc)
            x = torch.linalg.vector_norm(X, dtype=acc)
            if bool(-b * d <= tol * x):
                break
    return X


def iterate_gram(X: torch.Tensor, schedule: list[Coeffs], restart_every: int = 5) -> torch.Tensor:
    """Gram-space iteration: iterate on the small ``r×r`` matrices, touch ``X`` twice.

    Every iterate is ``X_t = Q_t X₀`` with ``Q_t`` a polynomial in ``S = X₀X₀ᵀ``; all of them
    commute, so with ``R_t = X_t X_tᵀ`` one step is ``P = aI + bR + cR²``, ``Q ← PQ``,
    ``R ← PRP``. Cost for r×k input and T ≤ 5 steps: 2 big products (``S`` and the final
    ``Q X₀``, 2r²k flops each) plus ``4T − 3`` small r×r products, against 2 big + 1 small
    per step in standard space, so it wins when k ≫ r.

    Precision. Gram space squares the condition number, and a rounding error that gives
    ``S`` a slightly negative eigenvalue λ is *amplified* by every step (P(λ) > 1 for λ < 0).
    In bf16 (|λ| ~ 4e-3·‖S‖) this was measured to diverge on ill-conditioned input, so the
    iteration always runs in float32 or wider, whatever ``X``'s dtype. In float32 the drift
    stays below 1e-2 for 5 steps; longer schedules re-form ``X = Q X₀`` and ``S`` every
    ``restart_every`` steps (two extra big products each time): :func:`gram_steps` in segments
    of ``restart_every``.
    """
    work = X.dtype
    X = X if X.dtype in (torch.float32, torch.float64) else X.float()
    for t in range(0, len(schedule), restart_every):
        X = gram_steps(X, schedule[t : t + restart_every], tighten=t == 0, gram_polynomial=_summed_polynomial)
    return X.to(work)
