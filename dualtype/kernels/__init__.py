"""Orthogonalization kernels: plain tensors in, plain tensors out.

``orthogonalize(G)`` approximates the orthogonal polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ``
(reduced SVD) over the last two dimensions; leading dimensions are a batch handled in one
call. See :func:`orthogonalize` for the methods and their measured accuracy contracts.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from dualtype.checks import is_int
from dualtype.errors import ConfigError, NonFiniteError, ShapeError
from dualtype.kernels import newton_schulz as _ns
from dualtype.kernels.coefficients import (
    CUBIC,
    QUINTIC_MUON,
    optimal_quintic,
    polar_express_schedule,
    scalar_trace,
)
from dualtype.kernels.dtypes import accumulation_dtype
from dualtype.kernels.svd import orthogonalize_svd

__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "orthogonalize",
    "orthogonalize_svd",
    "fast_dtype",
    "accumulation_dtype",
    "polar_express_schedule",
    "optimal_quintic",
    "scalar_trace",
    "CUBIC",
    "QUINTIC_MUON",
]

METHODS = ("auto", "svd", "cubic", "quintic", "polar_express", "gram")
DEFAULT_METHOD = "auto"
# "auto" evaluates the Polar Express schedule in Gram space when the long side is at least
# GRAM_ASPECT × the short side: fully (in float32/float64), or in bf16/fp16 as two Gram
# segments of AUTO_SEGMENTS_BF16 steps, since a full Gram iteration must compute in float32
# and loses there. Measurements: benchmarks/orthogonalize.md ("Constants of the kernels").
GRAM_ASPECT = 2.0
AUTO_SEGMENTS_BF16 = (2, 3)

# Polar Express defaults: 5 steps (the cost of Muon's quintic) designed for singular values in
# [PE_LOWER, 1] after the tightened normalization (benchmarks/orthogonalize.md).
PE_STEPS = 5
PE_LOWER = 2.5e-3
PE_CUSHION = 0.02
# Each step but the last is designed on an interval widened by this factor, so singular
# values that rounding pushes past the bound stay where the next polynomial maps them near 1;
# bf16 and fp16 round more and need more room (benchmarks/orthogonalize.md).
PE_SAFETY = {torch.bfloat16: 1.05, torch.float16: 1.05}
PE_SAFETY_DEFAULT = 1.01
CUBIC_MAX_STEPS = 40


@torch.compiler.assume_constant_result
def _schedule(lower: float, steps: int, safety: float) -> tuple[tuple[float, float, float], ...]:
    # Plain Python floats, computed once per (lower, steps, safety); opaque to dynamo, so a
    # compiled caller sees constants instead of tracing the Remez exchange.
    return polar_express_schedule(lower, steps, safety, PE_CUSHION)


def fast_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """``torch.bfloat16`` where bf16 matmuls are fast (CUDA with bf16 support, CPUs with
    AVX512-BF16/AMX as reported by oneDNN), else ``torch.float32``. Pass it as ``dtype=`` to
    :func:`orthogonalize` for speed; see its contract table for the accuracy it costs."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if dev.type == "cpu":
        try:
            return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
        except (AttributeError, RuntimeError):
            return torch.float32
    return torch.float32


def _check_arguments(method, steps, work, lower, tol) -> None:
    """Refuse arguments the kernels cannot honour, before any work (:class:`ConfigError`)."""
    if method not in METHODS:
        raise ConfigError(f"unknown orthogonalization method {method!r}; choose from {METHODS}")
    if steps is not None and (not is_int(steps) or steps < 1):
        raise ConfigError(f"orthogonalize: steps must be an integer ≥ 1, got {steps!r}")
    if not isinstance(work, torch.dtype) or not (work.is_floating_point or work.is_complex):
        raise ConfigError(f"orthogonalize works in a floating dtype, got {work}")
    if lower is not None and not (isinstance(lower, (int, float)) and 0 < lower < 1):
        raise ConfigError(f"orthogonalize: lower must be in (0, 1), got {lower!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
        raise ConfigError(f"orthogonalize: tol must be a number > 0, got {tol!r}")


def _cubic_tol(work: torch.dtype) -> float:
    # Stop when a step changes X by less than this (relative); below the rounding floor of
    # the working dtype a step cannot make progress anyway.
    return max(1e-4, 4.0 * torch.finfo(work).eps)


class _Options(NamedTuple):
    """What an iteration needs besides X: the matrix shape ``(m, n)`` and the caller's options."""

    shape: tuple[int, int]
    work: torch.dtype
    steps: int | None
    lower: float | None
    tol: float | None


def _polar_express_steps(o: _Options, safety: float) -> list[tuple[float, float, float]]:
    lower = PE_LOWER if o.lower is None else float(o.lower)
    return list(_schedule(lower, PE_STEPS if o.steps is None else o.steps, safety))


def _quintic(X: torch.Tensor, o: _Options) -> torch.Tensor:
    # Muon's quintic exactly: Frobenius normalization, fixed coefficients.
    return _ns.iterate(X, [QUINTIC_MUON] * (5 if o.steps is None else o.steps), tighten=False)


def _cubic(X: torch.Tensor, o: _Options) -> torch.Tensor:
    max_steps = CUBIC_MAX_STEPS if o.steps is None else o.steps
    return _ns.iterate_cubic(X, max_steps, _cubic_tol(o.work) if o.tol is None else o.tol)


def _polar_express(X: torch.Tensor, o: _Options) -> torch.Tensor:
    schedule = _polar_express_steps(o, PE_SAFETY.get(o.work, PE_SAFETY_DEFAULT))
    return _ns.iterate(X, schedule, tighten=True)


def _gram(X: torch.Tensor, o: _Options) -> torch.Tensor:
    # the Gram iteration always computes in float32 or wider: the float32 margin is enough
    return _ns.iterate_gram(X, _polar_express_steps(o, PE_SAFETY_DEFAULT))


def _segments(steps: int) -> list[int] | None:
    """Gram segments for ``auto`` in bf16/fp16: AUTO_SEGMENTS_BF16, else the first 2 steps (1
    for 3 or fewer) and then the rest; None for a single step."""
    if steps == sum(AUTO_SEGMENTS_BF16):
        return list(AUTO_SEGMENTS_BF16)
    if steps > 1:
        return [2, steps - 2] if steps > 3 else [1, steps - 1]
    return None


def _auto(X: torch.Tensor, o: _Options) -> torch.Tensor:
    r, k = sorted(o.shape)
    if k < GRAM_ASPECT * r:
        return _polar_express(X, o)
    if o.work in (torch.float32, torch.float64):
        return _gram(X, o)
    schedule = _polar_express_steps(o, PE_SAFETY.get(o.work, PE_SAFETY_DEFAULT))
    segments = _segments(len(schedule))
    if segments is None:
        return _ns.iterate(X, schedule, tighten=True)
    return _ns.iterate_segments(X, schedule, segments)


#: method -> the iteration that maps the normalized X (``[B, r, k]``, r ≤ k) to its polar factor
_ITERATIONS: dict[str, Callable[[torch.Tensor, _Options], torch.Tensor]] = {
    "quintic": _quintic,
    "cubic": _cubic,
    "polar_express": _polar_express,
    "gram": _gram,
    "auto": _auto,
}


def _exact(G: torch.Tensor, check_finite: bool) -> torch.Tensor:
    """The SVD path, refusing NaN/Inf first (an assertion inside a compiled graph)."""
    if check_finite and G.device.type != "meta":
        if torch.compiler.is_compiling():  # no data-dependent branch in a graph
            torch._assert_async(torch.isfinite(G).all(), "orthogonalize: input holds NaN or Inf")
        elif not bool(torch.isfinite(G).all()):
            raise NonFiniteError(
                f"orthogonalize: input of shape {tuple(G.shape)} holds NaN or Inf; "
                "refusing to return NaN."
            )
    return orthogonalize_svd(G)


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
        method: ``None`` (→ ``DEFAULT_METHOD`` = ``"auto"``), ``"auto"``, ``"svd"``,
            ``"cubic"``, ``"quintic"``, ``"polar_express"`` or ``"gram"``.
        steps: iterations (quintic: 5; auto/polar_express/gram: 5; cubic: max steps, 40).
        dtype: working dtype of the iteration (default: G's dtype). ``torch.bfloat16`` is
            much faster where the hardware supports it; :func:`fast_dtype` picks it. Norms and
            the scale are always accumulated in float32 (float64 for float64 input); the
            result is cast back to G's dtype.
        lower: polar_express/gram: the schedule is designed for singular values in
            ``[lower, 1]`` of the normalized input (default 2.5e-3).
        tol: cubic: stop when ``‖ΔX‖_F ≤ tol·‖X‖_F`` (default ``max(1e-4, 4·eps)``); skipped
            under ``torch.compile``, where exactly ``steps`` steps run.
        check_finite: raise :class:`NonFiniteError` on NaN/Inf input (one scalar check on the
            Frobenius norms computed anyway; under ``torch.compile`` a RuntimeError from
            ``torch._assert_async``).

    Raises:
        ShapeError: ``G.ndim < 2``.  NonFiniteError: NaN or Inf in ``G``.
        ConfigError: ``G`` is not a tensor, an unknown method, ``steps < 1``, ``lower``
        outside (0, 1), ``tol ≤ 0`` or a non-floating ``dtype``.

    Methods (all iterate odd polynomials ``X ← (aI + bXXᵀ + c(XXᵀ)²)X`` on the side whose Gram
    matrix is smaller; batched with ``bmm``/``baddbmm``):

    - ``"auto"`` (default): exact SVD when the working dtype is float64; else the Polar
      Express schedule, evaluated where it was measured cheapest: for float32/float64 with
      long side ≥ 2× short side, fully in Gram space; in bf16 on such shapes as two Gram-space
      segments of 2 and 3 steps (``AUTO_SEGMENTS_BF16``); standard space otherwise. Same
      polynomials in all cases (tested to agree in float64).
    - ``"polar_express"``: 5 greedy minimax quintics (own Remez, :mod:`.coefficients`) for
      σ in [2.5e-3, 1] with a 0.02 cushion, after a normalization tightened for free to
      ``‖S²‖_F^{1/4}`` (S = XXᵀ). Same cost as Muon's quintic.
    - ``"gram"``: the same schedule iterated on the r×r Gram matrix and applied to X once
      (2 big products in total); computes in ≥ float32 (bf16 Gram iteration diverges).
    - ``"quintic"``: Muon's (3.4445, −4.7750, 2.0315) × 5 after ``X/‖X‖_F`` (as torch).
    - ``"cubic"``: the paper's (1.5, −0.5) to tolerance (max 40 steps).
    - ``"svd"``: exact reference (:func:`orthogonalize_svd`); also used for complex input
      (the polar factor is U Vᴴ; the iterations here are real-only).

    Accuracy contract (relative Frobenius error to the exact polar factor, float32 input):
    ``auto`` and ``polar_express`` ≤ 0.010 in float32 and ≤ 0.019 in bf16 on Gaussian input,
    ``quintic`` 0.15–0.21, ``cubic`` < 1e-4 in float32; float64 runs the exact SVD (error at
    rounding level). The full table, the ill-conditioned and low-rank cases the 5-step
    kernels do not resolve, and how they were measured (``python
    benchmarks/bench_orthogonalize.py --contract``) are in benchmarks/orthogonalize.md;
    tests/test_kernels.py asserts the bounds. A matrix whose entries are all below the
    smallest normal number of the accumulation dtype is effectively zero and maps to zero:
    the kernels never return NaN for finite input.
    """
    if not isinstance(G, torch.Tensor):
        raise ConfigError(f"orthogonalize expects a torch.Tensor, got {type(G).__name__}")
    if G.ndim < 2:
        raise ShapeError(
            f"orthogonalize needs a matrix or a batch of matrices [..., m, n]; "
            f"got shape {tuple(G.shape)} (ndim {G.ndim})"
        )
    method = DEFAULT_METHOD if method is None else method
    work = G.dtype if dtype is None else dtype
    _check_arguments(method, steps, work, lower, tol)
    if G.numel() == 0:
        return torch.zeros_like(G)
    # Exact SVD: asked for; complex input; or the default in float64, whose accuracy should
    # follow the dtype (5 Newton–Schulz steps stop near 1e-2, the SVD is at rounding level).
    if method == "svd" or G.is_complex() or (method == "auto" and work == torch.float64):
        return _exact(G, check_finite)
    X, transposed = _ns.prepare(G, work, check_finite)
    X = _ITERATIONS[method](X, _Options(tuple(G.shape[-2:]), work, steps, lower, tol))
    return _ns.finish(X, G, transposed)
