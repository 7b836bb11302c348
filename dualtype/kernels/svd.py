"""Exact polar factor by SVD: the reference every iterative kernel is measured against."""

from __future__ import annotations

import torch


def orthogonalize_svd(G: torch.Tensor) -> torch.Tensor:
    """Exact ``U Vᵀ`` of ``G = U Σ Vᵀ`` (reduced SVD) over the last two dims; for complex
    ``G`` the polar factor ``U Vᴴ``.

    Computed in float32 at least (float64 and complex128 stay; other complex dtypes compute
    in complex64); returned in ``G``'s dtype. Singular directions with σ ≤ max(m, n)·eps·σ_max
    are dropped, so zero maps to zero and the output of a rank-deficient ``G`` has singular
    values in {0, 1}.
    """
    if G.dtype in (torch.float64, torch.complex128, torch.complex64):
        work = G
    else:
        work = G.to(torch.complex64) if G.is_complex() else G.float()
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(work.shape[-2:]) * torch.finfo(S.dtype).eps
    keep = (S > tol).to(U.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)
