"""The accumulation dtype: where norms, scales and sums are computed for a tensor of a dtype."""

from __future__ import annotations

import torch

__all__ = ["accumulation_dtype"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 and complex128 accumulate in themselves, other complex dtypes in complex64,
    everything else (float32, bf16, fp16) in float32. ``.to_real()`` of it is the dtype of
    a norm's value."""
    if dtype in (torch.float64, torch.complex128):
        return dtype
    return torch.complex64 if dtype.is_complex else torch.float32
