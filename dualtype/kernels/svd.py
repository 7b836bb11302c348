"""Exact polar factor by SVD: the reference every iterative kernel is measured against."""

from __future__ import annotations

import torch

from dualtype.kernels.dtypes import accumulation_dtype


def scaled_for_svd(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Y, scale)`` with ``X ≈ scale·Y`` per matrix, for LAPACK's SVD.

    ``scale`` is a power of two (exact) that brings the largest real or imaginary part of
    ``Y`` into [1, 2); parts below eps² of that are flushed to zero. They cannot move a
    singular value by more than ~√(mn)·eps²·σ_max, far below rounding, but LAPACK's complex
    SVD returned NaN on such input (denormal entries, or a part of 1e-92 beside 0.2). A
    matrix whose max part is below the smallest normal number is effectively zero: ``Y = 0``.
    NaN/Inf propagate. ``scale`` is real, shaped ``[..., 1, 1]``.
    """
    real = X.real.dtype if X.is_complex() else X.dtype
    parts = torch.view_as_real(X) if X.is_complex() else X.unsqueeze(-1)
    amax = parts.abs().amax(dim=(-3, -2, -1), keepdim=True)  # [..., 1, 1, 1]
    live = ~(amax < torch.finfo(real).tiny)  # NaN stays live and propagates
    _, exponent = torch.frexp(torch.where(live, amax, torch.ones_like(amax)))
    # 2^(e-1) ≤ amax < 2^e; 2^e itself overflows for amax ≥ 2^127 in float32
    scale = torch.ldexp(torch.ones_like(amax), exponent - 1)
    Y = parts / scale
    Y = torch.where(live & ~(Y.abs() < torch.finfo(real).eps ** 2), Y, torch.zeros_like(Y))
    Y = torch.view_as_complex(Y.contiguous()) if X.is_complex() else Y.squeeze(-1)
    return Y, scale.squeeze(-1)


def orthogonalize_svd(G: torch.Tensor) -> torch.Tensor:
    """Exact ``U Vᵀ`` of ``G = U Σ Vᵀ`` (reduced SVD) over the last two dims; for complex
    ``G`` the polar factor ``U Vᴴ``.

    Computed in float32 at least (float64 and complex128 stay; other complex dtypes compute
    in complex64); returned in ``G``'s dtype. Singular directions with σ ≤ max(m, n)·eps·σ_max
    are dropped, so zero maps to zero and the output of a rank-deficient ``G`` has singular
    values in {0, 1}.
    """
    work = G.to(accumulation_dtype(G.dtype))
    U, S, Vh = torch.linalg.svd(scaled_for_svd(work)[0], full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(work.shape[-2:]) * torch.finfo(S.dtype).eps
    keep = (S > tol).to(U.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)
