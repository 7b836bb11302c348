"""Specification of dualtype.kernels: the orthogonalization kernels.

Three layers: (1) the coefficient schedules, checked on the scalar map σ ↦ p(σ);
(2) each kernel computes exactly ``U f(Σ) Vᵀ`` for the documented scalar map f (float64,
hypothesis over shapes, spectra, ranks); (3) the documented accuracy contract against the exact
``UVᵀ`` and the API properties (batch, dtype, device, zero, NaN, transpose, compile).
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualtype.errors import DualityError, DualtypeError, NonFiniteError, ShapeError
from dualtype.kernels import newton_schulz as _ns
from dualtype.kernels import (
    AUTO_SEGMENTS_BF16,
    _schedule,
    CUBIC,
    DEFAULT_METHOD,
    METHODS,
    PE_CUSHION,
    PE_LOWER,
    PE_SAFETY,
    PE_STEPS,
    QUINTIC_MUON,
    optimal_quintic,
    orthogonalize,
    orthogonalize_svd,
    polar_express_schedule,
    scalar_trace,
)

ITERATIVE = ["cubic", "quintic", "polar_express", "gram", "auto"]
HYP = settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module: on the shared 2-core machine, OpenMP barriers of
    2 threads under contention made these small kernels 10–20× slower (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rel_err(O: torch.Tensor, ref: torch.Tensor) -> float:
    O, ref = O.double(), ref.double()
    return (torch.linalg.vector_norm(O - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-300)).item()


def with_spectrum(m: int, n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """float64 [m, n] matrix with singular values s (length min(m, n)), random vectors."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, dtype=torch.float64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=g))
    return (U * s) @ V.mT


def power_law(m: int, n: int, alpha: float, seed: int = 0) -> torch.Tensor:
    k = min(m, n)
    return with_spectrum(m, n, torch.arange(1, k + 1, dtype=torch.float64) ** -alpha, seed)


def scalar_map(method: str, sigma: torch.Tensor) -> torch.Tensor:
    """The documented scalar map f with output = U f(Σ) Vᵀ (float64), including the kernel's
    normalization: x = σ/‖σ‖₂ (Frobenius), then for the tuned kernels x / (Σx⁸)^{1/8}."""
    x = sigma / sigma.norm() if sigma.norm() > 0 else sigma
    if method == "quintic":
        coeffs = [QUINTIC_MUON] * 5
    else:
        x = x / (x**8).sum() ** 0.125 if x.norm() > 0 else x
        coeffs = polar_express_schedule(PE_LOWER, PE_STEPS, 1.01, PE_CUSHION)
    for a, b, c in coeffs:
        x = a * x + b * x**3 + c * x**5
    return x


# ----------------------------------------------------------------------------- (1) coefficients


@pytest.mark.parametrize("lo,hi", [(1e-3, 1.0), (0.02, 1.0), (0.3, 1.9), (0.9, 1.1)])
def test_optimal_quintic_equioscillates_and_is_minimax(lo, hi):
    (a, b, c), E = optimal_quintic(lo, hi)
    xs = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    err = 1 - (a * xs + b * xs**3 + c * xs**5)
    assert err.abs().max().item() == pytest.approx(E, rel=1e-6)
    # Alternation: the error hits +E at lo and -E at hi, and both signs inside.
    assert err[0].item() == pytest.approx(E, rel=1e-9)
    assert err[-1].item() == pytest.approx(-E, rel=1e-9)
    # Minimax: perturbing the coefficients never lowers the max error.
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        d = torch.randn(3, dtype=torch.float64, generator=g) * 1e-3
        e2 = (1 - ((a + d[0]) * xs + (b + d[1]) * xs**3 + (c + d[2]) * xs**5)).abs().max()
        assert e2.item() >= E * (1 - 1e-9)


def test_default_schedule_converges_on_its_interval():
    sched = polar_express_schedule(PE_LOWER, PE_STEPS, 1.01, PE_CUSHION)
    trace = scalar_trace(sched, PE_LOWER, 1.0)
    dev = [max(1 - lo, hi - 1) for lo, hi in trace]
    # Worst deviation from 1 after the last step, on all of [lower, 1]: 0.0128 (orthogonalize.md).
    assert dev[-1] <= 0.013
    # From the second step on the worst deviation shrinks every step.
    assert all(d2 < d1 for d1, d2 in zip(dev[1:], dev[2:]))
    # Robust to rounding above the bound (safety factor): σ up to 1.01 stays in range too.
    lo, hi = scalar_trace(sched, 0.5, 1.01)[-1]
    assert max(1 - lo, hi - 1) <= 0.013


def test_longer_schedule_is_much_tighter():
    """Each extra minimax step shrinks the worst deviation roughly quadratically: 8 steps
    from σ ≥ 1e-3 must be within 1e-4 of 1 everywhere, and 100× tighter than 5 steps."""
    def worst(steps: int) -> float:
        lo, hi = scalar_trace(polar_express_schedule(1e-3, steps), 1e-3, 1.0)[-1]
        return max(1 - lo, hi - 1)

    assert worst(8) < 1e-4
    assert worst(8) < worst(5) / 100


def test_muon_quintic_does_not_converge_but_cubic_does():
    lo, hi = scalar_trace([QUINTIC_MUON] * 5, 0.05, 1.0)[-1]
    assert lo < 0.75 and hi > 1.1  # the spread docs/design.md §3 describes
    lo, hi = scalar_trace([CUBIC] * 40, 1e-3, 1.0)[-1]
    assert lo > 0.999 and hi <= 1.0 + 1e-12


# ----------------------------------------------------------------------------- (2) exact maps


@st.composite
def spectra(draw):
    """Shapes incl. 1×n, n×1, 2×2; spectra random / ill-conditioned / rank-deficient."""
    m = draw(st.integers(1, 40))
    n = draw(st.integers(1, 40))
    k = min(m, n)
    kind = draw(st.sampled_from(["random", "ill", "rankdef", "equal"]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        s = torch.rand(k, dtype=torch.float64, generator=g) + 0.05
    elif kind == "ill":
        s = torch.logspace(0, -draw(st.integers(2, 8)), k, dtype=torch.float64)
    elif kind == "rankdef":
        s = torch.rand(k, dtype=torch.float64, generator=g) + 0.1
        s[draw(st.integers(0, k - 1)) :] = 0 if k > 1 else s[0]
    else:
        s = torch.ones(k, dtype=torch.float64)
    scale = 10.0 ** draw(st.integers(-6, 6))
    return with_spectrum(m, n, s * scale, seed), s * scale


@pytest.mark.parametrize("method", ["quintic", "polar_express", "gram"])
@HYP
@given(case=spectra())
def test_kernel_is_exactly_its_scalar_map(method, case):
    """In float64 the kernel equals U f(Σ) Vᵀ for the documented polynomial map f. ("auto" in
    float64 is the exact SVD: see test_reliability's float64 accuracy tests.)"""
    G, s = case
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    expected = (U * scalar_map(method, S)) @ Vh
    O = orthogonalize(G, method)
    assert O.dtype == torch.float64 and O.shape == G.shape
    tol = 1e-9 * max(1.0, math.sqrt(min(G.shape)))
    if method in ("gram", "auto"):  # Gram space squares the condition number: rounding ~ eps·κ²
        tol = 1e-6 * max(1.0, math.sqrt(min(G.shape)))
    assert torch.linalg.vector_norm(O - expected).item() <= tol


@HYP
@given(case=spectra())
def test_cubic_converges_on_resolvable_directions(case):
    """Cubic NS to tolerance: every singular value above 1e-4 of the max is driven to 1;
    zero stays zero; nothing exceeds 1."""
    G, s = case
    O = orthogonalize(G, "cubic", tol=1e-10, steps=80)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    f = torch.linalg.svdvals(O)
    big = S > 1e-4 * S.max()
    # The output's singular values: those of resolvable directions are 1, the rest ≤ 1.
    assert f.max().item() <= 1 + 1e-9
    ref = (U[:, big] @ Vh[big]) if big.any() else torch.zeros_like(G)
    proj = U[:, big].mT @ O @ Vh[big].mT
    assert torch.allclose(proj, torch.eye(int(big.sum()), dtype=G.dtype), atol=1e-6)
    if s.max() > 0 and (S[~big] == 0).all():
        assert rel_err(O, ref) <= 1e-6


# ----------------------------------------------------------------------------- (3) contract
# Documented in orthogonalize's docstring (measured by benchmarks/bench_orthogonalize.py
# --contract); bounds here are the documented numbers.

PE32 = {"gauss": (0.012, 0.97, 1.02), "pow05": (0.011, 0.97, 1.02), "pow1": (0.033, 0.88, 1.02)}
PE16 = {"gauss": (0.02, 0.97, 1.03), "pow05": (0.02, 0.97, 1.03), "pow1": (0.05, 0.88, 1.03)}
QUINTIC = {"gauss": (0.23, 0.19, 1.21), "pow05": (0.23, 0.65, 1.21), "pow1": (0.23, 0.65, 1.21)}
CONTRACT = {
    # (method, working dtype): {case: (max rel err, σ min ≥, σ max ≤)} — the docstring's
    # table (measured on the larger cases of benchmarks/... --contract) with ~15% margin;
    # the cases here are smaller for test speed and no harder than the documented ones.
    ("auto", torch.float32): PE32,
    ("auto", torch.bfloat16): PE16,
    ("polar_express", torch.float32): PE32,
    ("polar_express", torch.bfloat16): PE16,
    ("gram", torch.float32): PE32,
    ("gram", torch.bfloat16): {"gauss": (0.012, 0.97, 1.02), "pow05": (0.012, 0.97, 1.02), "pow1": (0.05, 0.88, 1.02)},
    ("quintic", torch.float32): QUINTIC,
    ("quintic", torch.bfloat16): QUINTIC,
    ("cubic", torch.float32): {c: (1e-4, 0.9999, 1.0001) for c in ("gauss", "pow05", "pow1")},
    ("cubic", torch.bfloat16): {"gauss": (0.075, 0.25, 1.005), "pow05": (0.01, 0.98, 1.005), "pow1": (0.055, 0.98, 1.005)},
}

CASES = {
    "gauss": lambda: torch.randn(192, 320, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
    "pow05": lambda: power_law(256, 384, 0.5, seed=2),
    "pow1": lambda: power_law(256, 384, 1.0, seed=3),
}


@pytest.mark.parametrize("method,dtype", list(CONTRACT))
def test_accuracy_contract(method, dtype):
    for case, (max_err, smin, smax) in CONTRACT[(method, dtype)].items():
        G = CASES[case]()
        ref = orthogonalize_svd(G)
        O = orthogonalize(G.float(), method, dtype=dtype)
        sv = torch.linalg.svdvals(O.double())
        assert rel_err(O, ref) <= max_err, (case, rel_err(O, ref))
        assert smin <= sv.min().item() and sv.max().item() <= smax, (case, sv.min(), sv.max())


def test_tuned_kernels_beat_muon_quintic():
    """The reason the schedule exists: at Muon's cost, ≥5× closer to UVᵀ."""
    G = torch.randn(256, 1024, generator=torch.Generator().manual_seed(4))
    ref = orthogonalize_svd(G.double())
    e_q = rel_err(orthogonalize(G, "quintic"), ref)
    e_pe = rel_err(orthogonalize(G, "polar_express"), ref)
    assert e_pe * 5 <= e_q


# ----------------------------------------------------------------------------- API properties


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_looped(method):
    g = torch.Generator().manual_seed(5)
    G = torch.randn(2, 3, 24, 40, generator=g)
    O = orthogonalize(G, method)
    assert O.shape == G.shape
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(O[i, j], orthogonalize(G[i, j], method), rtol=1e-4, atol=1e-5)


@HYP
@given(m=st.integers(1, 12), n=st.integers(1, 12), batch=st.lists(st.integers(1, 3), max_size=2))
def test_batched_equals_looped_any_shape(m, n, batch):
    G = torch.randn(*batch, m, n, dtype=torch.float64)
    O = orthogonalize(G)
    flat_G, flat_O = G.reshape(-1, m, n), O.reshape(-1, m, n)
    for g, o in zip(flat_G, flat_O):
        torch.testing.assert_close(o, orthogonalize(g), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device_follow_input(method, dtype):
    G = torch.randn(6, 9).to(dtype)
    O = orthogonalize(G, method)
    assert O.dtype == dtype and O.device == G.device and O.shape == G.shape
    O2 = orthogonalize(G, method, dtype=torch.float32)  # requested working dtype
    assert O2.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_follows_cuda_device():  # pragma: no cover - no GPU here
    G = torch.randn(64, 96, device="cuda")
    assert orthogonalize(G).device == G.device


@pytest.mark.parametrize("method", METHODS)
def test_zero_in_zero_out_even_inside_a_batch(method):
    G = torch.randn(3, 5, 7)
    G[1] = 0
    O = orthogonalize(G, method)
    assert torch.equal(O[1], torch.zeros(5, 7))
    assert not torch.isnan(O).any()
    torch.testing.assert_close(O[0], orthogonalize(G[0], method), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_input_raises(method, bad):
    G = torch.randn(2, 4, 6)
    G[1, 2, 3] = bad
    with pytest.raises(NonFiniteError, match="NaN or Inf"):
        orthogonalize(G, method)
    assert issubclass(NonFiniteError, DualtypeError) and not issubclass(NonFiniteError, DualityError)


def test_nonfinite_check_can_be_disabled():
    G = torch.full((3, 3), float("nan"))
    assert torch.isnan(orthogonalize(G, "polar_express", check_finite=False)).all()


@pytest.mark.parametrize("shape", [(), (5,)])
def test_wrong_ndim_raises_shape_error(shape):
    with pytest.raises(ShapeError, match="ndim"):
        orthogonalize(torch.ones(shape))


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown orthogonalization method"):
        orthogonalize(torch.ones(2, 2), "newton")


def test_empty_matrix():
    assert orthogonalize(torch.ones(0, 3)).shape == (0, 3)


@pytest.mark.parametrize("method", METHODS)
def test_transposed_input_gives_transposed_output(method):
    G = torch.randn(2, 12, 30, dtype=torch.float64)
    torch.testing.assert_close(
        orthogonalize(G.mT, method), orthogonalize(G, method).mT, rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1e-3, 1e3, 1e6, 1e30])
def test_scale_invariance(method, scale):
    G = torch.randn(16, 24, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(orthogonalize(G * scale, method), orthogonalize(G, method), rtol=2e-4, atol=2e-5)


def test_tiny_shapes_are_exact_where_trivial():
    # A 1×n or n×1 matrix has UVᵀ = G/‖G‖; every iterative method gets it to within its
    # scalar map at σ = 1 after normalization, i.e. essentially exactly for the tuned ones.
    for G in (torch.randn(1, 7, dtype=torch.float64), torch.randn(7, 1, dtype=torch.float64)):
        for method in ["polar_express", "gram", "cubic", "auto"]:
            assert rel_err(orthogonalize(G, method), G / G.norm()) < 0.02


def test_default_is_documented_and_auto_picks_gram_for_rectangular_fp32():
    assert DEFAULT_METHOD == "auto"
    G = torch.randn(16, 64)
    torch.testing.assert_close(orthogonalize(G), orthogonalize(G, "gram"), rtol=0, atol=0)
    S = torch.randn(32, 40)
    torch.testing.assert_close(orthogonalize(S), orthogonalize(S, "polar_express"), rtol=0, atol=0)
    # float64: accuracy follows the dtype, "auto" is the exact SVD
    D = torch.randn(16, 64, dtype=torch.float64)
    torch.testing.assert_close(orthogonalize(D), orthogonalize(D, "svd"), rtol=0, atol=0)
    B = torch.randn(32, 40).bfloat16()  # bf16, aspect < 2: standard space
    torch.testing.assert_close(orthogonalize(B), orthogonalize(B, "polar_express"), rtol=0, atol=0)
    # bf16 rectangular: same polynomials, evaluated as Gram-space segments (2, 3).
    R = torch.randn(32, 128).bfloat16()
    assert rel_err(orthogonalize(R), orthogonalize(R, "polar_express")) < 0.03
    X, _ = _ns.prepare(R, torch.bfloat16, True)
    sched = _schedule(PE_LOWER, PE_STEPS, PE_SAFETY[torch.bfloat16])
    seg = _ns.iterate_segments(X, list(sched), list(AUTO_SEGMENTS_BF16))
    torch.testing.assert_close(orthogonalize(R), seg.reshape(R.shape), rtol=0, atol=0)


@HYP
@given(case=spectra(), segments=st.sampled_from([[1, 1, 1, 1, 1], [2, 3], [2, 2, 1], [1, 4], [5], [3, 2]]))
def test_gram_segments_are_the_same_polynomial(case, segments):
    """Evaluating steps in Gram space changes nothing in exact arithmetic (float64)."""
    G, _ = case
    X, _ = _ns.prepare(G, torch.float64, True)
    sched = list(_schedule(PE_LOWER, PE_STEPS, 1.01))
    a = _ns.iterate(X, sched, tighten=True)
    b = _ns.iterate_segments(X, sched, segments)
    assert torch.linalg.vector_norm(a - b).item() <= 1e-7 * max(1.0, math.sqrt(min(G.shape)))


def test_auto_bf16_rectangular_meets_its_contract():
    G = torch.randn(128, 512, generator=torch.Generator().manual_seed(8))
    ref = orthogonalize_svd(G.double())
    O = orthogonalize(G, dtype=torch.bfloat16)
    sv = torch.linalg.svdvals(O.double())
    assert rel_err(O, ref) <= 0.025 and 0.93 <= sv.min() and sv.max() <= 1.07
    P = power_law(128, 512, 1.0, seed=9)
    O = orthogonalize(P.float(), dtype=torch.bfloat16)
    sv = torch.linalg.svdvals(O.double())
    assert rel_err(O, orthogonalize_svd(P)) <= 0.065 and 0.85 <= sv.min() and sv.max() <= 1.09


# ----------------------------------------------------------------------------- compile


@pytest.mark.parametrize("method", ["polar_express", "gram", "quintic", "cubic"])
def test_traces_fullgraph_without_graph_breaks(method):
    """Dynamo captures the whole kernel as one graph (fullgraph=True raises on any break);
    the eager backend keeps this fast, inductor is exercised by the slow test below."""
    torch._dynamo.reset()
    f = torch.compile(lambda G: orthogonalize(G, method, steps=5), fullgraph=True, backend="eager")
    G = torch.randn(2, 8, 12)
    torch.testing.assert_close(f(G), orthogonalize(G, method, steps=5, tol=None), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64])
def test_svd_paths_trace_fullgraph(dtype):
    """float64 "auto" and complex input run the SVD: it must trace without a graph break too
    (the finiteness check becomes an async assert under compile)."""
    torch._dynamo.reset()
    f = torch.compile(lambda G: orthogonalize(G), fullgraph=True, backend="eager")
    G = torch.randn(2, 8, 12, dtype=dtype)
    torch.testing.assert_close(f(G), orthogonalize_svd(G))
    with pytest.raises((NonFiniteError, RuntimeError), match="NaN or Inf"):
        f(torch.full((2, 8, 12), float("nan"), dtype=dtype))


def test_compiled_check_finite_still_refuses_nan():
    torch._dynamo.reset()
    f = torch.compile(lambda G: orthogonalize(G), fullgraph=True, backend="eager")
    with pytest.raises((NonFiniteError, RuntimeError), match="NaN or Inf"):
        f(torch.full((4, 6), float("nan")))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["auto", "gram", "cubic"])
def test_compiles_with_inductor_fullgraph(method):
    torch._dynamo.reset()
    f = torch.compile(lambda G: orthogonalize(G, method, steps=5), fullgraph=True, dynamic=False)
    G = torch.randn(2, 8, 12)
    torch.testing.assert_close(f(G), orthogonalize(G, method, steps=5, tol=None), rtol=1e-4, atol=1e-4)


def test_fast_dtype_picks_bf16_only_where_supported():
    from dualtype.kernels import fast_dtype

    d = fast_dtype("cpu")
    assert d in (torch.bfloat16, torch.float32)
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert d == torch.bfloat16
    assert fast_dtype("meta") == torch.float32
