"""Orthogonalization kernels: plain tensors in, plain tensors out.

``orthogonalize(G)`` approximates the orthogonal polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ``
(reduced SVD) over the last two dimensions; leading dimensions are a batch handled in one
call. See :func:`orthogonalize` for the methods and their measured accuracy contracts.
"""

from __future__ import annotations

import torch

from dualtype.errors import NonFiniteError, ShapeError
from dualtype.kernels import newton_schulz as _ns
from dualtype.kernels.coefficients import (
    CUBIC,
    QUINTIC_MUON,
    optimal_quintic,
    polar_express_schedule,
    scalar_trace,
)
from dualtype.kernels.svd import orthogonalize_svd

__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "orthogonalize",
    "orthogonalize_svd",
    "polar_express_schedule",
    "optimal_quintic",
    "scalar_trace",
    "CUBIC",
    "QUINTIC_MUON",
]

METHODS = ("auto", "svd", "cubic", "quintic", "polar_express", "gram")
DEFAULT_METHOD = "auto"
# "auto": the Polar Express schedule, evaluated in Gram space when that is measured faster:
# working dtype float32/float64 and long side ≥ GRAM_ASPECT × short side (see
# benchmarks/orthogonalize.md). In bf16 the Gram variant needs float32 small products and
# loses on this CPU, so bf16 always uses standard space.
GRAM_ASPECT = 2.0

# Polar Express defaults: 5 steps (the cost of Muon's quintic) designed for singular values in
# [PE_LOWER, 1] after the tightened normalization. Chosen by measurement (benchmarks/).
PE_STEPS = 5
PE_LOWER = 2.5e-3
PE_CUSHION = 0.02
CUBIC_MAX_STEPS = 40


@torch.compiler.assume_constant_result
def _schedule(lower: float, steps: int) -> tuple[tuple[float, float, float], ...]:
    # Plain Python floats, computed once per (lower, steps); opaque to dynamo, so a compiled
    # caller sees constants instead of tracing the Remez exchange.
    return polar_express_schedule(lower, steps, 1.01, PE_CUSHION)


def _cubic_tol(work: torch.dtype) -> float:
    # Stop when a step changes X by less than this (relative); below the rounding floor of
    # the working dtype a step cannot make progress anyway.
    return max(1e-4, 4.0 * torch.finfo(work).eps)


def orthogonalize(
    G: torch.Tensor,
    method: str | None = None,
    *,
    steps: int | None = None,
    dtype: torch.dtype | None = None,
    lower: float | None = None,
    tol: float | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Approximate ``U Vᵀ`` for ``G = U Σ Vᵀ``; ``G`` is ``[..., m, n]``, output has G's shape,
    dtype and device. Zero in, zero out; the result does not depend on the scale of ``G``.

    Args:
        G: ``[..., m, n]`` with ``m, n ≥ 1``; leading dims are a batch (one batched call).
        method: ``None`` (→ ``DEFAULT_METHOD`` = ``"polar_express"``), ``"svd"``, ``"cubic"``,
            ``"quintic"``, ``"polar_express"`` or ``"gram"``.
        steps: iterations (quintic: 5; polar_express/gram: 5; cubic: max steps, 40).
        dtype: working dtype of the iteration (default: G's dtype). ``torch.bfloat16`` is
            ~4× faster on CPUs with AVX512-BF16 and on GPUs; norms and the scale are always
            accumulated in float32 (float64 for float64 input); the result is cast back.
        lower: polar_express/gram: the schedule is designed for singular values in
            ``[lower, 1]`` of the normalized input (default 2e-3).
        tol: cubic: stop when ``‖ΔX‖_F ≤ tol·‖X‖_F`` (default ``max(1e-4, 4·eps)``); skipped
            under ``torch.compile``, where exactly ``steps`` steps run.
        check_finite: raise :class:`NonFiniteError` on NaN/Inf input (one scalar check on the
            Frobenius norms computed anyway; under ``torch.compile`` a RuntimeError from
            ``torch._assert_async``).

    Raises:
        ShapeError: ``G.ndim < 2``.  NonFiniteError: NaN or Inf in ``G``.

    Methods and their accuracy contracts (relative Frobenius error ``‖O − UVᵀ‖_F/‖UVᵀ‖_F``,
    output singular values on the non-null space; measured by
    ``benchmarks/bench_orthogonalize.py --contract`` in float32, see benchmarks/orthogonalize.md;
    the tests assert these bounds):

    ==============  ======================  ======================  =========================
    method          Gaussian (any shape)    power law σ_i ∝ i^-1/2  power law σ_i ∝ i^-1
    ==============  ======================  ======================  =========================
    svd             exact (≤1e-5)           exact                   exact
    cubic           see CONTRACTS           see CONTRACTS           see CONTRACTS
    quintic         see CONTRACTS           …                       …
    polar_express   see CONTRACTS           …                       …
    gram            see CONTRACTS           …                       …
    ==============  ======================  ======================  =========================
    """
    if not isinstance(G, torch.Tensor):
        raise ShapeError(f"orthogonalize expects a torch.Tensor, got {type(G).__name__}")
    if G.ndim < 2:
        raise ShapeError(
            f"orthogonalize needs a matrix or a batch of matrices [..., m, n]; "
            f"got shape {tuple(G.shape)} (ndim {G.ndim})"
        )
    method = DEFAULT_METHOD if method is None else method
    if method not in METHODS:
        raise ValueError(f"unknown orthogonalization method {method!r}; choose from {METHODS}")
    if G.numel() == 0:
        return torch.zeros_like(G)
    if method == "svd":
        if check_finite and not bool(torch.isfinite(G).all()):
            raise NonFiniteError(
                f"orthogonalize: input of shape {tuple(G.shape)} holds NaN or Inf; "
                "refusing to return NaN."
            )
        return orthogonalize_svd(G)

    work = G.dtype if dtype is None else dtype
    if not work.is_floating_point:
        raise ValueError(f"orthogonalize works in a floating dtype, got {work}")
    X, transposed = _ns.prepare(G, work, check_finite)
    if method == "quintic":
        # Muon's quintic exactly: Frobenius normalization, fixed coefficients.
        X = _ns.iterate(X, [QUINTIC_MUON] * (5 if steps is None else steps), tighten=False)
    elif method == "cubic":
        max_steps = CUBIC_MAX_STEPS if steps is None else steps
        X = _ns.iterate_cubic(X, max_steps, _cubic_tol(work) if tol is None else tol)
    else:
        schedule = list(
            _schedule(
                PE_LOWER if lower is None else float(lower), PE_STEPS if steps is None else steps
            )
        )
        if method == "auto":
            r, k = sorted(G.shape[-2:])
            use_gram = work in (torch.float32, torch.float64) and k >= GRAM_ASPECT * r
            method = "gram" if use_gram else "polar_express"
        if method == "polar_express":
            X = _ns.iterate(X, schedule, tighten=True)
        else:
            X = _ns.iterate_gram(X, schedule)
    return _ns.finish(X, G, transposed)
