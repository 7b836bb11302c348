"""Orthogonalization kernels: plain tensors in, plain tensors out.

``orthogonalize(G)`` approximates the orthogonal polar factor ``U Vᵀ`` of ``G = U Σ Vᵀ``
(reduced SVD) over the last two dimensions; leading dimensions are a batch handled in one
call. See :func:`orthogonalize` for the methods and their measured accuracy contracts.
"""

from __future__ import annotations

import torch

from dualtype.errors import ConfigError, NonFiniteError, ShapeError
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
    "fast_dtype",
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
# benchmarks/orthogonalize.md). In bf16 the full Gram variant must compute in float32 (it
# diverges in bf16) and loses on this CPU, so bf16 uses the Gram segments below instead.
GRAM_ASPECT = 2.0
# In bf16 on rectangular input, "auto" runs the 5 steps as two Gram-space segments of 2 and
# 3 steps (4 big products instead of 10; ~0.67× the flops at 1024×4096). Measured in bf16
# (benchmarks/orthogonalize.md): error 0.013 → 0.020 on Gaussian 1024×4096, 0.045 → 0.056 on
# σ_i ∝ i^-1; a first segment of 3 steps diverged on square Gaussian input (error 1.4), a
# single segment of 5 on ill-conditioned input; (2, 2, 1) costs 0.78× with no loss.
AUTO_SEGMENTS_BF16 = (2, 3)

# Polar Express defaults: 5 steps (the cost of Muon's quintic) designed for singular values in
# [PE_LOWER, 1] after the tightened normalization. Chosen by measurement (benchmarks/).
PE_STEPS = 5
PE_LOWER = 2.5e-3
PE_CUSHION = 0.02
# Each step but the last is designed on an interval widened by this factor, so singular
# values that rounding pushes past the bound stay where the next polynomial maps them near 1.
# bf16 needs more room: with 1.01 a well-conditioned 3×3 bf16 matrix (σ = 2.08, 1.20, 0.84)
# left step 1 at σ = 1.88 > 1 + E₁ and diverged to 1e11; 1.05 converges (error 0.010) and
# costs 0.013 → 0.017 on a Gaussian 1024×4096.
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
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
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
            ``steps=4, lower=0.01`` is ~20% cheaper and as accurate on well-conditioned
            input (Gaussian 1024×256: 0.010) but not on ill-conditioned (σ_i ∝ i^-1: 0.46).
        dtype: working dtype of the iteration (default: G's dtype). ``torch.bfloat16`` was
            measured 3–5× faster than float32 on this CPU (AVX512-BF16) and is fast on GPUs;
            :func:`fast_dtype` picks it where the device supports it. Norms and the scale are
            always accumulated in float32 (float64 for float64 input); the result is cast
            back to G's dtype.
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

    - ``"auto"`` (default): exact SVD when the working dtype is float64 (see below); else
      the Polar Express schedule, evaluated where it was measured
      cheapest: for float32/float64 with long side ≥ 2× short side, fully in Gram space;
      in bf16 on such shapes as two Gram-space segments of 2 and 3 steps
      (``AUTO_SEGMENTS_BF16``); standard space otherwise. Same polynomials in all cases
      (tested to agree in float64).
    - ``"polar_express"``: 5 greedy minimax quintics (own Remez, :mod:`.coefficients`) for
      σ in [2.5e-3, 1] with a 0.02 cushion, after a normalization tightened for free to
      ``‖S²‖_F^{1/4}`` (S = XXᵀ). Same cost as Muon's quintic.
    - ``"gram"``: the same schedule iterated on the r×r Gram matrix and applied to X once
      (2 big products in total); computes in ≥ float32 (bf16 Gram iteration diverges).
    - ``"quintic"``: Muon's (3.4445, −4.7750, 2.0315) × 5 after ``X/‖X‖_F`` (as torch).
    - ``"cubic"``: the paper's (1.5, −0.5) to tolerance (max 40 steps).
    - ``"svd"``: exact reference (:func:`orthogonalize_svd`).

    Accuracy contract: relative Frobenius error ``‖O − UVᵀ‖_F/‖UVᵀ‖_F`` to the exact polar
    factor (float64 SVD) and [min, max] output singular value, float32 input, working dtype
    fp32 | bf16. Measured by ``python benchmarks/bench_orthogonalize.py --contract`` (seed 0;
    table in benchmarks/orthogonalize.md); tests/test_kernels.py asserts these bounds.
    ``auto`` in bf16 equals ``polar_express`` on near-square shapes (256²: 0.018) and uses
    Gram segments on rectangular ones (the ≤0.019 / 0.062 entries). bf16 schedules are
    designed with a wider safety factor (``PE_SAFETY``), which costs ~0.004 of accuracy.

    ==============  =======================  =======================  =======================
    method          Gaussian (256², 1024×256  power law σ_i ∝ i^-½     power law σ_i ∝ i^-1
                    512×2048) fp32 | bf16     512×1024  fp32 | bf16    512×1024  fp32 | bf16
    ==============  =======================  =======================  =======================
    auto            ≤0.010 | ≤0.019          0.009 | 0.018            0.028 | 0.062
                    σ∈[.977,1.013]|[.963,1.030] [.987,1.013]|[.963,1.033] [.90,1.013]|[.85,1.09]
    polar_express   ≤0.010 | ≤0.018          0.009 | 0.017            0.028 | 0.051
                    σ∈[.977,1.013]|[.969,1.026] [.987,1.013]|[.973,1.025] [.90,1.013]|[.88,1.025]
    gram            ≤0.010 | ≤0.010          0.009 | 0.010            0.028 | 0.043
    quintic         0.15–0.20 | 0.13–0.20    0.21 | 0.21              0.18 | 0.18
                    σ∈[0.20,1.20]            [0.68,1.13]              [0.68,1.20]
    cubic           <1e-4 | ≤0.065           <1e-4 | 0.008            <1e-4 | 0.047
    svd             exact (1e-7)             exact                    exact
    ==============  =======================  =======================  =======================

    Accuracy follows the dtype. float64 (input, or ``dtype=torch.float64``) with the default
    method runs the exact SVD: relative error against a constructed UVᵀ measured 1e-15 to
    4e-15 for σ uniform in [0.1, 1.1] and 6e-14 to 5e-13 for σ = logspace(0, −4), shapes 24²
    to 256×1024 (tests/test_reliability.py asserts < 1e-10); 256×1024 took 61 ms against
    55 ms for ``polar_express`` at one thread. The 5-step schedule stops near 1e-2
    (‖dualize(g)‖ was 1.0128).
    float32/bf16 keep the fast 5-step default of the table. Complex input always uses the
    SVD (the polar factor is U Vᴴ; the iterations here are real-only). A matrix whose
    entries are all below the smallest normal number of the accumulation dtype (float32's
    1.2e-38; float64's 2.2e-308) is effectively zero and maps to zero: the kernels never
    return NaN for finite input.

    What the iterative kernels do not resolve (inherent, measured the same for torch's Muon
    NS): singular values below ~``lower``·σ_max after 5 steps (σ_i ∝ i^-2: error ~0.88;
    σ = logspace(0, −6): ~0.66; cubic float32 resolves both: 3e-4, 2e-3). In bf16 the
    rounding noise of X (~1e-3·σ_max) is amplified like a real small singular value, so a
    (numerically) low-rank input gets spurious directions: rank 16 of 256×512 has error
    0.0085 in float32 but 0.89 in bf16 (torch's bf16 Muon NS: 0.40). Use float32 for such
    input.
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
    # Exact SVD: asked for; complex input (the iterations here are real-only; the polar factor
    # of a complex G is U Vᴴ); or the default in float64, whose accuracy should follow the
    # dtype (Newton–Schulz's 5 steps stop near 1e-2, the SVD is at rounding level).
    if method == "svd" or G.is_complex() or (method == "auto" and work == torch.float64):
        if check_finite and G.device.type != "meta":
            if torch.compiler.is_compiling():  # no data-dependent branch in a graph
                torch._assert_async(torch.isfinite(G).all(), "orthogonalize: input holds NaN or Inf")
            elif not bool(torch.isfinite(G).all()):
                raise NonFiniteError(
                    f"orthogonalize: input of shape {tuple(G.shape)} holds NaN or Inf; "
                    "refusing to return NaN."
                )
        return orthogonalize_svd(G)

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
                PE_LOWER if lower is None else float(lower),
                PE_STEPS if steps is None else steps,
                # "gram" always iterates in float32 or wider: the float32 margin is enough.
                PE_SAFETY_DEFAULT if method == "gram" else PE_SAFETY.get(work, PE_SAFETY_DEFAULT),
            )
        )
        segments = None
        if method == "auto":
            r, k = sorted(G.shape[-2:])
            if k >= GRAM_ASPECT * r:
                if work in (torch.float32, torch.float64):
                    method = "gram"
                elif len(schedule) == sum(AUTO_SEGMENTS_BF16):
                    segments = list(AUTO_SEGMENTS_BF16)
                elif len(schedule) > 1:  # other step counts: first 2 steps, then the rest
                    segments = [2, len(schedule) - 2] if len(schedule) > 3 else [1, len(schedule) - 1]
        if segments is not None:
            X = _ns.iterate_segments(X, schedule, segments)
        elif method in ("polar_express", "auto"):
            X = _ns.iterate(X, schedule, tighten=True)
        else:
            X = _ns.iterate_gram(X, schedule)
    return _ns.finish(X, G, transposed)
