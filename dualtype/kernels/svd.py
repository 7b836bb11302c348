"""Exact polar factor by SVD: the reference every iterative kernel is measured against."""

from __future__ import annotations

import torch


def orthogonalize_svd(G: torch.Tensor) -> torch.Tensor:
    """Exact ``U Vᵀ`` of ``G = U Σ Vᵀ`` (reduced SVD) over the last two dims.

    Computed in float32 at least (float64 stays float64); returned in ``G``'s dtype.
    Singular directions with σ = 0 are dropped, so zero maps to zero and the output of a
    rank-deficient ``G`` has singular values in {0, 1}.
    """
    work = G if G.dtype == torch.float64 else G.float()
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    tol = S.amax(dim=-1, keepdim=True) * max(work.shape[-2:]) * torch.finfo(work.dtype).eps
    keep = (S > tol).to(work.dtype)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(G.dtype)
