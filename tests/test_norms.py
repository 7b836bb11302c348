"""Property tests for ``dualtype.norms`` (docs/design.md §3).

Every check compares the code under test with an independent float64 reference written in
numpy straight from the definitions of docs/design.md §3 (SVD for the spectral and nuclear norms,
row norms, per-slice sums for Conv2D), or with a property that holds by definition
(‖dualize(g)‖ = 1, ⟨g, dualize(g)⟩ = ‖g‖†, ‖g‖† ≥ ⟨g, t⟩ for every unit t, the value as an
induced operator norm ‖Wx‖_β / ‖x‖_α, homogeneity, the triangle inequality, ...).

Layout: vector norms (l2, linf, rms) treat the whole tensor as one vector; matrix norms read
the last two dimensions as the matrix ``[out, in]`` and conv1d/2d/3d the last 3/4/5 as the
kernel ``[out, in, *kernel]``; leading dimensions are a batch and ``value``/``dual_value`` return one
number per batch entry.
"""

from __future__ import annotations

import copy
import math
import pickle

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dualtype.errors import ConfigError, DualityError, DualtypeError, NonFiniteError, ShapeError
from dualtype.norms import (
    Conv1D,
    Conv2D,
    Conv3D,
    Euclidean,
    L1ToRMS,
    LInf,
    Norm,
    RMS,
    RMSToLInf,
    RMSToRMS,
    get,
)

VECTOR = ("l2", "linf", "rms")
MATRIX = ("rms->rms", "l1->rms", "rms->linf")
ROWWISE = ("l1->rms", "rms->linf")
CONV = ("conv1d", "conv2d", "conv3d")
SPATIAL = {"conv1d": 1, "conv2d": 2, "conv3d": 3}  # kernel dimensions
NAMES = ["conv1d", "conv2d", "conv3d", "l1->rms", "l2", "linf", "rms", "rms->linf", "rms->rms"]  # the norms dualtype ships
BATCHED = MATRIX + CONV

F64 = torch.float64
LOW_PRECISION = (torch.float32, torch.bfloat16)
# Tolerances (relative) per input dtype for results that must equal a reference.
TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.bfloat16: 2e-2}


# --------------------------------------------------------------------------------------------
# Layout helpers
# --------------------------------------------------------------------------------------------


def core_ndim(name: str, ndim: int) -> int:
    if name in VECTOR:
        return ndim
    if name in MATRIX:
        return 2
    if name in CONV:
        return 2 + SPATIAL[name]
    raise AssertionError(f"test suite does not know norm {name!r}: add it to the layouts")


def batch_shape(name: str, shape) -> tuple[int, ...]:
    shape = tuple(shape)
    return shape[: len(shape) - core_ndim(name, len(shape))]


def core_axes(name: str, ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim - core_ndim(name, ndim), ndim))


def per_entry_sum(name: str, x: np.ndarray) -> np.ndarray:
    """Σ over the core (matrix / kernel / whole-vector) axes: one number per batch entry."""
    return np.sum(x, axis=core_axes(name, x.ndim))


def per_entry_absmax(name: str, x: np.ndarray) -> np.ndarray:
    return np.max(np.abs(x), axis=core_axes(name, x.ndim), initial=0.0)


def expand_core(name: str, v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-entry array broadcast against the full tensor."""
    return np.asarray(v).reshape(np.shape(v) + (1,) * core_ndim(name, ndim))


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


# --------------------------------------------------------------------------------------------
# Independent float64 references, straight from docs/design.md §3
# --------------------------------------------------------------------------------------------


def _nrm(x: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:
    """Euclidean norm, scaled by max|x| first so squares neither underflow nor overflow."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(np.abs(x), axis=axis, keepdims=True, initial=0.0)
    safe = np.where(m == 0, 1.0, m)
    r = np.sqrt(np.sum((x / safe) ** 2, axis=axis, keepdims=True)) * m
    if keepdims:
        return r
    return r.reshape(()) if axis is None else np.squeeze(r, axis=axis)


def _svals(w: np.ndarray) -> np.ndarray:
    return np.linalg.svd(w, compute_uv=False)  # batched over leading axes


def ref_value(name: str, w: np.ndarray) -> np.ndarray:
    if name == "l2":
        return _nrm(w)
    if name == "linf":
        return np.max(np.abs(w), initial=0.0)
    if name == "rms":
        return _nrm(w) / math.sqrt(max(w.size, 1))
    if name == "rms->rms":
        out, inp = w.shape[-2:]
        return math.sqrt(inp / out) * _svals(w).max(axis=-1)
    if name == "l1->rms":
        return _nrm(w, axis=-1).max(axis=-1) / math.sqrt(w.shape[-1])
    if name == "rms->linf":
        return _nrm(w, axis=-1).max(axis=-1) * math.sqrt(w.shape[-1])
    if name in CONV:
        per_slice = [ref_value("rms->rms", w[(..., *tap)]) for tap in _taps(name, w)]
        return len(per_slice) * np.max(np.stack(per_slice), axis=0)
    raise AssertionError(name)


def _taps(name: str, w: np.ndarray) -> list[tuple[int, ...]]:
    """The kernel positions of a conv weight ``[..., out, in, *kernel]``."""
    return list(np.ndindex(*w.shape[-SPATIAL[name]:]))


def ref_dual(name: str, g: np.ndarray) -> np.ndarray:
    if name == "l2":
        return _nrm(g)
    if name == "linf":
        return np.sum(np.abs(g))
    if name == "rms":
        return _nrm(g) * math.sqrt(g.size)
    if name == "rms->rms":
        out, inp = g.shape[-2:]
        return math.sqrt(out / inp) * _svals(g).sum(axis=-1)
    if name == "l1->rms":
        return _nrm(g, axis=-1).sum(axis=-1) * math.sqrt(g.shape[-1])
    if name == "rms->linf":
        return _nrm(g, axis=-1).sum(axis=-1) / math.sqrt(g.shape[-1])
    if name in CONV:
        per_slice = [ref_dual("rms->rms", g[(..., *tap)]) for tap in _taps(name, g)]
        return np.sum(np.stack(per_slice), axis=0) / len(per_slice)
    raise AssertionError(name)


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(d == 0, 1.0, d)


def ref_dualize(name: str, g: np.ndarray) -> np.ndarray:
    """The maximiser; unique for generic (e.g. Gaussian, full-rank, no zero entries) g."""
    if name == "l2":
        return g / _safe(_nrm(g))
    if name == "linf":
        return np.sign(g)
    if name == "rms":
        return math.sqrt(g.size) * g / _safe(_nrm(g))
    if name == "rms->rms":
        out, inp = g.shape[-2:]
        u, s, vt = np.linalg.svd(g, full_matrices=False)
        nonzero = (s.max(axis=-1) > 0)[..., None, None]
        return math.sqrt(out / inp) * np.where(nonzero, u @ vt, 0.0)
    if name == "l1->rms":
        return math.sqrt(g.shape[-1]) * g / _safe(_nrm(g, axis=-1, keepdims=True))
    if name == "rms->linf":
        return g / (math.sqrt(g.shape[-1]) * _safe(_nrm(g, axis=-1, keepdims=True)))
    if name in CONV:
        res = np.zeros_like(g, dtype=np.float64)
        taps = _taps(name, g)
        for tap in taps:
            res[(..., *tap)] = ref_dualize("rms->rms", g[(..., *tap)]) / len(taps)
        return res
    raise AssertionError(name)


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


@st.composite
def shapes(draw, name: str, batch: bool = True, max_side: int = 6):
    side = st.integers(1, max_side)
    if name in VECTOR:
        return tuple(draw(st.lists(side, min_size=1, max_size=3)))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2 if batch else 0)))
    if name in MATRIX:
        return lead + (draw(side), draw(side))
    if name in CONV:
        kernel = st.sampled_from([1, 2, 3])  # 1×1, 3×3 and non-square kh ≠ kw
        out, inp = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        return lead[:1] + (out, inp) + tuple(draw(kernel) for _ in range(SPATIAL[name]))
    raise AssertionError(name)


GENERIC = ("gauss",)  # full rank, no zero entries (almost surely): unique maximiser
ANY = ("gauss", "lowrank", "sparse", "elements")


def draw_array(data, shape, kinds=ANY, log10_scale=(-3, 3)) -> np.ndarray:
    """A float64 array of the given shape: Gaussian (scaled), rank-1, sparse, or elementwise
    hypothesis floats (zeros, repeats, tiny and large entries)."""
    kind = data.draw(st.sampled_from(kinds), label="kind")
    if kind == "elements":
        elements = st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False, width=64)
        return data.draw(hnp.arrays(np.float64, shape, elements=elements), label="g")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = 10.0 ** data.draw(st.integers(*log10_scale), label="log10 scale")
    g = rng.standard_normal(shape)
    if kind == "sparse":
        g = g * (rng.random(shape) < 0.3)
    elif kind == "lowrank" and len(shape) >= 2:
        # rank 1 in the (out, in) plane: the last two axes, or the first two of a kernel
        i, j = (-4, -3) if len(shape) >= 4 else (-2, -1)
        a_shape, b_shape = list(shape), list(shape)
        a_shape[j], b_shape[i] = 1, 1
        g = rng.standard_normal(a_shape) * rng.standard_normal(b_shape)
    return g * scale


def exact(norm: Norm, g: torch.Tensor) -> torch.Tensor:
    """dualize with the exact SVD kernel (docs/design.md §3: exact SVD is the reference in tests);
    vector and row-wise norms ignore ``method``. The default (iterative) kernel is tested
    separately, against its own looser bounds."""
    return norm.dualize(g, method="svd")


def as_tensor(a: np.ndarray, dtype=F64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def nonzero_entries(name: str, g: np.ndarray) -> np.ndarray:
    return per_entry_absmax(name, g) > 0


norm_names = pytest.mark.parametrize("name", NAMES)
# None = the default kernel of the matrix norms (iterative), "svd" = exact.
POLAR = ("rms->rms",) + CONV  # the norms whose dualize goes through an orthogonalization kernel


def _with_methods(names_):
    """(name, method) pairs: the default kernel for every norm, plus exact SVD for the
    polar norms (the others ignore ``method``)."""
    pairs = [(n, None) for n in names_] + [(n, "svd") for n in names_ if n in POLAR]
    ids = [f"{n}-{m or 'default'}" for n, m in pairs]
    return pytest.mark.parametrize("name,method", pairs, ids=ids)
batched_names = pytest.mark.parametrize("name", BATCHED)


def test_names_are_the_design_norms():
    assert sorted(NAMES) == sorted(VECTOR + MATRIX + CONV)
    for n in NAMES:
        assert get(n).name == n


# --------------------------------------------------------------------------------------------
# The defining properties of the duality map
# --------------------------------------------------------------------------------------------


@norm_names
@given(data=st.data())
def test_dualize_has_unit_norm_and_attains_the_dual_value(name, data):
    norm = get(name)
    g = draw_array(data, data.draw(shapes(name)))
    gt = as_tensor(g)
    d = exact(norm, gt)
    assert d.shape == gt.shape and d.dtype == F64
    dn = np64(d)
    assert np.isfinite(dn).all()
    nz = nonzero_entries(name, g)

    # ‖dualize(g)‖ = 1 for every nonzero entry (0 for a zero one), by the reference value
    # and by the code's own value.
    np.testing.assert_allclose(ref_value(name, dn), nz.astype(float), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np64(norm.value(d)), nz.astype(float), rtol=1e-9, atol=1e-9)

    # ⟨g, dualize(g)⟩ = ‖g‖†, against the reference and against dual_value().
    pairing = per_entry_sum(name, g * dn)
    dual_ref = ref_dual(name, g)
    np.testing.assert_allclose(pairing, dual_ref, rtol=1e-9, atol=0)
    np.testing.assert_allclose(np64(norm.dual_value(gt)), dual_ref, rtol=1e-9, atol=0)


@norm_names
@given(data=st.data())
def test_value_and_dual_value_match_definitions(name, data):
    norm = get(name)
    w = draw_array(data, data.draw(shapes(name)))
    wt = as_tensor(w)
    v, dv = norm.value(wt), norm.dual_value(wt)
    expected_shape = batch_shape(name, w.shape)
    for r in (v, dv):
        assert isinstance(r, torch.Tensor) and r.dtype == F64
        assert tuple(r.shape) == expected_shape and r.device == wt.device
    np.testing.assert_allclose(np64(v), ref_value(name, w), rtol=1e-10, atol=0)
    np.testing.assert_allclose(np64(dv), ref_dual(name, w), rtol=1e-10, atol=0)
    # a norm: non-negative, zero exactly for the zero entry
    nz = nonzero_entries(name, w)
    assert np.all((np64(v) > 0) == nz) and np.all((np64(dv) > 0) == nz)


@norm_names
@given(data=st.data())
def test_dualize_matches_reference_maximiser(name, data):
    norm = get(name)
    g = draw_array(data, data.draw(shapes(name)), kinds=GENERIC)
    d = np64(exact(norm, as_tensor(g)))
    ref = ref_dualize(name, g)
    np.testing.assert_allclose(d, ref, rtol=0, atol=1e-8 * max(1.0, np.abs(ref).max()))


@norm_names
@given(data=st.data())
def test_dual_value_dominates_every_unit_pairing(name, data):
    norm = get(name)
    shape = data.draw(shapes(name))
    g = draw_array(data, shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="t seed"))
    dual = np64(norm.dual_value(as_tensor(g)))
    d = np64(exact(norm, as_tensor(g)))
    n_random = 48
    candidates = [rng.standard_normal(shape) for _ in range(n_random)]
    candidates += [np.sign(rng.standard_normal(shape)) for _ in range(8)]
    candidates += [rng.standard_normal(shape) * (rng.random(shape) < 0.2) for _ in range(8)]
    # near-maximal candidates: small perturbations of the maximiser
    candidates += [
        d + eps * rng.standard_normal(shape) for eps in (1e-1, 1e-2, 1e-3) for _ in range(4)
    ]
    slack = 1e-9 * dual + 1e-300
    for t in candidates:
        vt = ref_value(name, t)
        if np.any(vt == 0):
            continue
        unit = t / expand_core(name, vt, t.ndim)  # t = random / value(random)
        pairing = per_entry_sum(name, g * unit)
        assert np.all(pairing <= dual + slack), (pairing, dual)


# --------------------------------------------------------------------------------------------
# value() as an induced operator norm ‖Wx‖_β / ‖x‖_α, maximised by brute force
# --------------------------------------------------------------------------------------------


def _rms(x: np.ndarray) -> np.ndarray:  # RMS of each column
    return _nrm(x, axis=0) / math.sqrt(x.shape[0])


def operator_ratios(name: str, w: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """‖W x‖_β / ‖x‖_α for each column x of ``xs`` (the operator as the layer applies it)."""
    if name == "rms->rms":  # Linear: x ↦ W x, RMS → RMS
        return _rms(w @ xs) / _rms(xs)
    if name == "l1->rms":  # Embedding [vocab, d]: x ∈ R^vocab ↦ Wᵀ x, ℓ1 → RMS
        return _rms(w.T @ xs) / np.sum(np.abs(xs), axis=0)
    if name == "rms->linf":  # head [classes, in]: x ↦ W x, RMS → ℓ∞
        return np.max(np.abs(w @ xs), axis=0) / _rms(xs)
    raise AssertionError(name)


def extremal_inputs(name: str, w: np.ndarray) -> np.ndarray:
    """Inputs where the sup is attained, found independently of the code under test."""
    if name == "rms->rms":
        return np.linalg.svd(w)[2][:1].T  # top right singular vector
    if name == "l1->rms":
        return np.eye(w.shape[0])  # one-hot inputs
    if name == "rms->linf":
        rows = w[np.any(w != 0, axis=1)]  # the row directions (rescaled: no underflow in W x)
        rows = rows / np.abs(rows).max(axis=1, keepdims=True)
        return rows.T if len(rows) else np.ones((w.shape[1], 1))
    raise AssertionError(name)


@pytest.mark.parametrize("name", MATRIX)
@given(data=st.data())
def test_value_is_the_induced_operator_norm(name, data):
    norm = get(name)
    shape = data.draw(shapes(name))
    w = draw_array(data, shape)
    values = np64(norm.value(as_tensor(w)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="x seed"))
    n_in = shape[-2] if name == "l1->rms" else shape[-1]
    for idx in np.ndindex(*batch_shape(name, shape)):
        wi, vi = w[idx], float(values[idx])
        xs = np.concatenate(
            [
                rng.standard_normal((n_in, 256)),
                np.sign(rng.standard_normal((n_in, 32))),
                rng.standard_normal((n_in, 32)) * (rng.random((n_in, 32)) < 0.3) + np.eye(n_in, 32),
            ],
            axis=1,
        )
        xs = xs[:, np.any(xs != 0, axis=0)]  # ‖x‖_α > 0
        ratios = operator_ratios(name, wi, xs)
        assert np.all(ratios <= vi * (1 + 1e-9) + 1e-300), (ratios.max(), vi)
        best = operator_ratios(name, wi, extremal_inputs(name, wi)).max()
        np.testing.assert_allclose(best, vi, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", POLAR)
@given(
    data=st.data(),
    dtype=st.sampled_from([F64, torch.float32, torch.bfloat16]),
    log10_c=st.floats(-6, 6),
)
def test_default_kernel_dualize(name, data, dtype, log10_c):
    """The default (iterative) orthogonalization: wired with DESIGN's constants and reshapes
    (compared with the kernel applied slice by slice here), an approximate maximiser (norm
    near 1, pairing near the dual value), scale invariant and odd. Values of moderate
    magnitude (extreme ones: test_default_kernel_extreme_magnitudes)."""
    from dualtype.kernels import orthogonalize

    norm = get(name)
    shape = data.draw(shapes(name))
    # bf16: generic input only; a rank-deficient matrix rounded to bf16 has spurious tiny
    # singular values the kernel inflates differently for differently laid-out inputs
    kinds = GENERIC if dtype == torch.bfloat16 else ("gauss", "lowrank", "sparse")
    g = as_tensor(draw_array(data, shape, kinds=kinds), dtype)
    d = norm.dualize(g)
    assert d.dtype == dtype and d.shape == g.shape and torch.isfinite(d).all()

    if name == "rms->rms":
        out, inp = shape[-2:]
        expected = orthogonalize(g) * math.sqrt(out / inp)
    else:
        k = SPATIAL[name]
        out, inp = shape[-2 - k:-k]
        expected = torch.zeros_like(g)
        taps = list(np.ndindex(*shape[-k:]))
        for tap in taps:
            expected[(..., *tap)] = orthogonalize(g[(..., *tap)]) * (math.sqrt(out / inp) / len(taps))
    scale = max(1e-30, np64(expected).__abs__().max())
    wiring_tol = {F64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 5e-2}[dtype]
    np.testing.assert_allclose(np64(d), np64(expected), rtol=0, atol=wiring_tol * scale)

    gq, dn = np64(g), np64(d)
    nz = nonzero_entries(name, gq)
    v = np.broadcast_to(ref_value(name, dn), nz.shape)
    assert np.all(v[nz] > 0.75) and np.all(v[nz] < 1.25) and np.all(v[~nz] == 0), v
    pairing = per_entry_sum(name, gq * dn)
    dual = ref_dual(name, gq)
    assert np.all(pairing >= 0.8 * dual), (pairing, dual)
    assert np.all(pairing <= np.maximum(v, 1.0) * dual * (1 + 1e-2) + 1e-300), (pairing, dual)

    # scale invariance and oddness, on generic input (a rank-deficient matrix rounded to
    # bf16 has spurious tiny singular values that an iterative kernel may inflate either way);
    # bf16 is scaled by a power of two so the scaled input is exact.
    g = as_tensor(draw_array(data, shape, kinds=GENERIC), dtype)
    d = np64(norm.dualize(g))
    c = 2.0 ** round(log10_c * 3.3) if dtype == torch.bfloat16 else 10.0**log10_c
    atol = {F64: 1e-6, torch.float32: 1e-3, torch.bfloat16: 1e-2}[dtype] * max(1.0, np.abs(d).max())
    scaled = as_tensor(c * np64(g), dtype)
    np.testing.assert_allclose(np64(norm.dualize(scaled)), d, rtol=0, atol=atol)
    np.testing.assert_allclose(np64(norm.dualize(-g)), -d, rtol=0, atol=atol)


@pytest.mark.parametrize("name", POLAR)
def test_default_kernel_bf16(name):
    """Regression: with the float32 safety margin, the default kernel in bf16 took this
    well-conditioned 3×3 matrix (σ ≈ 2.08, 1.20, 0.84) to singular values ~1e11 (after one
    step σ_max was 1.9, past the next polynomial's design interval). bf16 schedules now use
    a wider margin (dualtype.kernels.PE_SAFETY)."""
    g64 = np.random.default_rng(1).standard_normal((3, 3, 3, 3))[2, 1]
    shape = (3, 3) + (1,) * SPATIAL.get(name, 0)
    g = as_tensor(g64.reshape(shape), torch.bfloat16)
    d = np64(get(name).dualize(g))
    np.testing.assert_allclose(ref_value(name, d), 1.0, rtol=5e-2)
    np.testing.assert_allclose(d, ref_dualize(name, np64(g)), atol=5e-2)


@pytest.mark.parametrize("name", POLAR)
@pytest.mark.parametrize(
    "dtype,scale", [(torch.float32, 1e-30), (torch.float32, 1e20), (F64, 1e-200)], ids=str
)
def test_default_kernel_extreme_magnitudes(name, dtype, scale):
    """Regression: the kernel once normalized by a plain vector_norm, whose squares underflow
    (fp32 entries ~1e-30, fp64 ~1e-200: zeros or a non-orthogonal output) or overflow (fp32
    ~1e20: NonFiniteError on a finite gradient). The result must match the one at scale 1
    exactly up to rounding, and the exact map to the kernel's accuracy (~1e-2)."""
    shape = (4, 5) + (1, 2, 1)[:SPATIAL.get(name, 0)]
    g64 = np.random.default_rng(0).standard_normal(shape)
    d = np64(get(name).dualize(as_tensor(g64 * scale, dtype)))
    np.testing.assert_allclose(d, np64(get(name).dualize(as_tensor(g64, dtype))), atol=1e-5)
    np.testing.assert_allclose(d, ref_dualize(name, g64), atol=2e-2)


# --------------------------------------------------------------------------------------------
# Zero, scaling, sign, homogeneity, triangle inequality
# --------------------------------------------------------------------------------------------


@_with_methods(NAMES)
@given(data=st.data())
def test_zero_maps_to_exact_zero(name, method, data):
    norm = get(name)
    shape = data.draw(shapes(name))
    dtype = data.draw(st.sampled_from([F64, *LOW_PRECISION]), label="dtype")
    z = torch.zeros(shape, dtype=dtype)
    d = norm.dualize(z, method=method)
    assert d.dtype == dtype and d.shape == z.shape
    assert not torch.isnan(d).any()
    assert torch.equal(d, torch.zeros_like(d))
    for r in (norm.value(z), norm.dual_value(z)):
        assert not torch.isnan(r).any() and torch.equal(r, torch.zeros_like(r))


@norm_names
@given(data=st.data())
def test_zero_parts_stay_exactly_zero(name, data):
    """Zero entries (vector and row-wise norms), zero rows (row-wise), zero kernel slices
    (conv2d) and zero batch entries (matrix norms) dualize to exact zeros, the rest to the
    maximiser of the rest."""
    norm = get(name)
    shape = data.draw(shapes(name))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    g = rng.standard_normal(shape)
    if name in VECTOR or name in ROWWISE:
        mask = rng.random(shape) < 0.4
        if name in ROWWISE:
            mask = mask | (rng.random(shape[:-1] + (1,)) < 0.4)  # whole rows
    elif name in CONV:
        mask = np.zeros(shape, bool)
        k = SPATIAL[name]
        mask[..., rng.random(shape[-k:]) < 0.5] = True  # whole kernel-tap slices
    else:
        mask = np.zeros(shape, bool)
        lead = batch_shape(name, shape)
        if lead:
            mask[np.unravel_index(rng.integers(np.prod(lead)), lead)] = True
    g[mask] = 0.0
    d = np64(exact(norm, as_tensor(g)))
    assert np.all(d[mask] == 0.0)
    if name != "rms->rms" or not mask.any():
        # the remaining part is the reference maximiser of g with those zeros
        atol = 1e-8 * max(1, np.abs(d).max())
        np.testing.assert_allclose(d, ref_dualize(name, g), rtol=0, atol=atol)


@norm_names
@given(data=st.data(), log10_c=st.floats(-6, 6))
def test_dualize_is_scale_invariant_and_odd(name, data, log10_c):
    norm = get(name)
    g = draw_array(data, data.draw(shapes(name)), kinds=GENERIC)
    c = 10.0**log10_c
    base = np64(exact(norm, as_tensor(g)))
    atol = 1e-9 * max(1.0, np.abs(base).max())
    np.testing.assert_allclose(np64(exact(norm, as_tensor(c * g))), base, rtol=0, atol=atol)
    np.testing.assert_allclose(np64(exact(norm, as_tensor(-g))), -base, rtol=0, atol=atol)


@norm_names
@given(
    data=st.data(),
    dtype=st.sampled_from([F64, torch.float32, torch.bfloat16]),
    log10_c=st.integers(-30, 30),
)
def test_extreme_magnitudes(name, data, dtype, log10_c):
    """Finite gradients far from 1 (within every dtype's normal range: bf16 and fp32 reach
    1e±38, fp64 1e±308) are dualized like their rescaled versions: no spurious
    NonFiniteError, no unnormalized output when squares underflow."""
    norm = get(name)
    if dtype == F64:
        log10_c *= 8  # 1e±240
    shape = data.draw(shapes(name))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    base = rng.standard_normal(shape)
    base = np.sign(base) * np.clip(np.abs(base), 0.05, None)  # stay inside the normal range
    gt = as_tensor(base * 10.0**log10_c, dtype)
    gq = np64(gt)  # the exact input values
    m = np.abs(gq).max()
    tol = TOL[dtype]
    d = exact(norm, gt)
    assert d.dtype == dtype and torch.isfinite(d).all()
    dn = np64(d)
    ref = ref_dualize(name, gq / m)
    np.testing.assert_allclose(dn, ref, rtol=0, atol=max(tol, 1e-7) * 5 * max(1, np.abs(ref).max()))
    np.testing.assert_allclose(ref_value(name, dn), np.ones(batch_shape(name, shape)), rtol=tol * 5)
    # value and dual value: homogeneous, computed without losing the range
    acc_tol = TOL[dtype] if dtype == F64 else TOL[torch.float32]  # accumulated in fp32
    np.testing.assert_allclose(np64(norm.value(gt)) / m, ref_value(name, gq / m), rtol=acc_tol)
    np.testing.assert_allclose(np64(norm.dual_value(gt)) / m, ref_dual(name, gq / m), rtol=acc_tol)


@norm_names
@given(data=st.data(), c=st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3)))
def test_value_is_absolutely_homogeneous(name, data, c):
    norm = get(name)
    w = draw_array(data, data.draw(shapes(name)))
    for f in (norm.value, norm.dual_value):
        base = np64(f(as_tensor(w)))
        np.testing.assert_allclose(np64(f(as_tensor(c * w))), abs(c) * base, rtol=1e-10, atol=0)


@norm_names
@given(data=st.data())
def test_triangle_inequality(name, data):
    norm = get(name)
    shape = data.draw(shapes(name))
    a, b = draw_array(data, shape), draw_array(data, shape)
    for f in (norm.value, norm.dual_value):
        fa, fb = np64(f(as_tensor(a))), np64(f(as_tensor(b)))
        fab = np64(f(as_tensor(a + b)))
        assert np.all(fab <= (fa + fb) * (1 + 1e-10) + 1e-300), (fab, fa, fb)


# --------------------------------------------------------------------------------------------
# dtypes, non-contiguous inputs, batches
# --------------------------------------------------------------------------------------------


@norm_names
@given(data=st.data(), dtype=st.sampled_from([F64, torch.float32, torch.bfloat16]))
def test_dtypes(name, data, dtype):
    """dualize returns the input dtype; value/dual_value are float32 (float64 for float64)
    and accurate to float32 for bf16 inputs; low-precision duality maps are still maximisers
    up to the dtype's precision."""
    norm = get(name)
    shape = data.draw(shapes(name))
    gt = as_tensor(draw_array(data, shape, kinds=GENERIC, log10_scale=(-2, 2)), dtype)
    gq = np64(gt)
    tol = TOL[dtype]
    acc = F64 if dtype == F64 else torch.float32

    d = exact(norm, gt)
    assert d.dtype == dtype and d.shape == gt.shape
    dn = np64(d)
    np.testing.assert_allclose(ref_value(name, dn), np.ones(batch_shape(name, shape)), rtol=tol, atol=0)
    np.testing.assert_allclose(per_entry_sum(name, gq * dn), ref_dual(name, gq), rtol=tol, atol=0)
    if name not in POLAR:
        # well-conditioned maps: entrywise equal to the reference of the exact input values
        ref = ref_dualize(name, gq)
        np.testing.assert_allclose(dn, ref, rtol=0, atol=tol * np.abs(ref).max())

    v, dv = norm.value(gt), norm.dual_value(gt)
    assert v.dtype == acc and dv.dtype == acc
    assert tuple(v.shape) == batch_shape(name, shape) == tuple(dv.shape)
    acc_tol = TOL[acc]
    np.testing.assert_allclose(np64(v), ref_value(name, gq), rtol=acc_tol, atol=0)
    np.testing.assert_allclose(np64(dv), ref_dual(name, gq), rtol=acc_tol, atol=0)


def non_contiguous_views(g: torch.Tensor):
    """Views with the same values as ``g`` but other strides: (label, view, surely
    non-contiguous)."""
    many = sum(s > 1 for s in g.shape) >= 2
    rev = tuple(range(g.ndim))[::-1]
    yield "reversed strides", g.permute(rev).contiguous().permute(rev), many
    wide = torch.zeros(*g.shape[:-1], 2 * g.shape[-1], dtype=g.dtype)
    wide[..., ::2] = g
    yield "stride 2 in the last dim", wide[..., ::2], g.shape[-1] > 1
    tall = torch.zeros(2 * g.shape[0], *g.shape[1:], dtype=g.dtype)
    tall[1::2] = g
    yield "offset, stride 2 in the first dim", tall[1::2], g.shape[0] > 1 and g[0].numel() > 1
    if g.ndim >= 2:
        strided = g.shape[-1] > 1 and g.shape[-2] > 1
        yield "transposed", g.transpose(-1, -2).contiguous().transpose(-1, -2), strided


@_with_methods(NAMES)
@given(data=st.data(), dtype=st.sampled_from([F64, torch.float32]))
def test_non_contiguous_inputs(name, method, data, dtype):
    norm = get(name)
    g = as_tensor(draw_array(data, data.draw(shapes(name)), kinds=GENERIC), dtype)
    d_ref, v_ref, dv_ref = norm.dualize(g, method=method), norm.value(g), norm.dual_value(g)
    tol = (1e-10 if dtype == F64 else 1e-5) * (1 if method == "svd" else 100)
    for label, view, strided in non_contiguous_views(g):
        assert torch.equal(view, g)
        if strided:
            assert not view.is_contiguous(), label
        before = view.clone()
        d = norm.dualize(view, method=method)
        assert d.shape == g.shape and d.dtype == dtype, label
        atol = tol * max(1.0, d_ref.abs().max().item())
        torch.testing.assert_close(d, d_ref, rtol=tol, atol=atol, msg=label)
        torch.testing.assert_close(norm.value(view), v_ref, rtol=tol, atol=0, msg=label)
        torch.testing.assert_close(norm.dual_value(view), dv_ref, rtol=tol, atol=0, msg=label)
        assert torch.equal(view, before), f"{label}: dualize modified its input"


@_with_methods(BATCHED)
@given(data=st.data())
def test_batched_equals_per_entry(name, method, data):
    norm = get(name)
    core = data.draw(shapes(name, batch=False))
    lead = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="batch"))
    n = int(np.prod(lead))
    entries = [draw_array(data, core) for _ in range(n)]
    if n > 1 and data.draw(st.booleans(), label="one zero entry"):
        entries[data.draw(st.integers(0, n - 1))] = np.zeros(core)
    stacked = as_tensor(np.stack(entries).reshape(lead + core))
    v, dv, d = norm.value(stacked), norm.dual_value(stacked), norm.dualize(stacked, method=method)
    assert tuple(v.shape) == lead == tuple(dv.shape) and d.shape == stacked.shape
    for k, idx in enumerate(np.ndindex(*lead)):
        e = as_tensor(entries[k])
        ve, dve, de = norm.value(e), norm.dual_value(e), norm.dualize(e, method=method)
        assert ve.shape == () and dve.shape == ()
        torch.testing.assert_close(v[idx], ve, rtol=1e-10, atol=0)
        torch.testing.assert_close(dv[idx], dve, rtol=1e-10, atol=0)
        torch.testing.assert_close(d[idx], de, rtol=0, atol=1e-9 if method == "svd" else 1e-6)


DEGENERATE = [
    *[(n, s) for n in VECTOR for s in [(1,), (7,), (1, 5), (5, 1), (1, 1), (2, 1, 3)]],
    *[(n, s) for n in MATRIX for s in [(1, 5), (5, 1), (1, 1), (2, 1, 1), (3, 1, 4), (3, 4, 1), (8, 3)]],
    *[
        ("conv2d", s)
        for s in [
            (3, 2, 1, 1), (3, 2, 3, 3), (2, 3, 1, 3), (2, 3, 3, 1), (1, 1, 1, 1), (4, 2, 2, 3),
            (2, 1, 1, 3, 3),
        ]
    ],
    *[("conv1d", s) for s in [(3, 2, 1), (2, 3, 5), (1, 1, 1), (2, 4, 2, 3)]],
    *[("conv3d", s) for s in [(3, 2, 1, 1, 1), (2, 3, 2, 1, 3), (1, 1, 1, 1, 1)]],
]


@pytest.mark.parametrize(
    "name,shape", DEGENERATE, ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in DEGENERATE]
)
def test_degenerate_shapes(name, shape):
    norm = get(name)
    g = np.random.default_rng(abs(hash((name, shape))) % 2**32).standard_normal(shape)
    gt = as_tensor(g)
    d = np64(exact(norm, gt))
    np.testing.assert_allclose(d, ref_dualize(name, g), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ref_value(name, d), np.ones(batch_shape(name, shape)), rtol=1e-9)
    np.testing.assert_allclose(per_entry_sum(name, g * d), ref_dual(name, g), rtol=1e-9)
    np.testing.assert_allclose(np64(norm.value(gt)), ref_value(name, g), rtol=1e-10)
    np.testing.assert_allclose(np64(norm.dual_value(gt)), ref_dual(name, g), rtol=1e-10)
    z = exact(norm, torch.zeros(shape))
    assert torch.equal(z, torch.zeros(shape))


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@_with_methods(NAMES)
@given(
    data=st.data(),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    dtype=st.sampled_from([F64, torch.float32, torch.bfloat16]),
)
def test_non_finite_gradient_raises(name, method, data, bad, dtype):
    norm = get(name)
    shape = data.draw(shapes(name))
    g = torch.randn(shape, dtype=F64).to(dtype)
    if data.draw(st.booleans(), label="all but one entry zero"):
        g.zero_()
    flat = data.draw(st.integers(0, g.numel() - 1), label="position")
    g.view(-1)[flat] = bad
    with pytest.raises(NonFiniteError) as info:
        norm.dualize(g, method=method)
    assert isinstance(info.value, DualtypeError) and isinstance(info.value, ValueError)
    assert str(norm) in str(info.value), "the message names the norm"


WRONG_NDIM = [(n, s) for n in MATRIX for s in [(), (5,), (1,)]] + [
    ("conv2d", s) for s in [(), (3,), (3, 3), (4, 3, 3)]
] + [("conv1d", s) for s in [(), (3,), (3, 3)]] + [("conv3d", s) for s in [(3, 3), (4, 3, 3), (2, 4, 3, 3)]]


@pytest.mark.parametrize("name,shape", WRONG_NDIM)
@pytest.mark.parametrize("method", ["value", "dual_value", "dualize"])
def test_wrong_ndim_raises_shape_error(name, shape, method):
    norm = get(name)
    t = torch.ones(shape)
    with pytest.raises(ShapeError) as info:
        getattr(norm, method)(t)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, DualityError)
    assert name in msg, msg
    assert str(tuple(shape)) in msg, msg


@norm_names
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("method", ["value", "dual_value", "dualize"])
def test_integer_tensors_raise_shape_error(name, dtype, method):
    norm = get(name)
    t = torch.ones((2, 3, 3, 3, 3), dtype=dtype)
    with pytest.raises(ShapeError) as info:
        getattr(norm, method)(t)
    assert name in str(info.value)


@norm_names
@pytest.mark.parametrize("bad", [[[1.0, 2.0], [3.0, 4.0]], np.ones((2, 3, 3, 3)), 1.0])
def test_non_tensors_raise_config_error(name, bad):
    with pytest.raises(ConfigError, match="torch.Tensor"):
        get(name).dualize(bad)


# --------------------------------------------------------------------------------------------
# Names, equality, pickling
# --------------------------------------------------------------------------------------------

# Spellings documented in the module docstring, with the class each must give.
SPELLINGS = {
    **dict.fromkeys(["l2", "euclidean", "frobenius", "fro", "ℓ2"], Euclidean),
    **dict.fromkeys(["linf", "sign", "max", "ℓ∞"], LInf),
    **dict.fromkeys(["rms", "bias", "gain", "vector"], RMS),
    **dict.fromkeys(
        ["rms->rms", "rms → rms", "rms→rms", "rms_to_rms", "linear", "spectral", "hidden"], RMSToRMS
    ),
    **dict.fromkeys(["l1->rms", "l1 → rms", "ℓ1→rms", "l1_to_rms", "embedding", "embed"], L1ToRMS),
    **dict.fromkeys(
        ["rms->linf", "rms → linf", "rms→ℓ∞", "rms->ℓ∞", "rms_to_linf", "head", "output"], RMSToLInf
    ),
    **dict.fromkeys(["conv2d", "conv"], Conv2D),
    "conv1d": Conv1D,
    "conv3d": Conv3D,
}


def test_get_examples():
    assert get("rms → rms") == RMSToRMS()
    assert get("RMS → RMS") == RMSToRMS()
    assert get("RMS_TO_RMS") == RMSToRMS()
    assert get("  Conv2D ") == Conv2D()
    for spelling, cls in SPELLINGS.items():
        n = get(spelling)
        assert type(n) is cls, spelling
    for n in NAMES:
        norm = get(n)
        assert get(norm) is norm  # a Norm passes through


@given(
    spelling=st.sampled_from(sorted(SPELLINGS)),
    cases=st.lists(st.booleans(), min_size=20, max_size=20),
    gaps=st.lists(st.sampled_from(["", "", " ", "  ", "\t", "\n"]), min_size=21, max_size=21),
)
def test_get_ignores_case_and_whitespace(spelling, cases, gaps):
    mangled = "".join(
        gaps[i] + (c.upper() if cases[i % 20] else c.lower()) for i, c in enumerate(spelling)
    )
    mangled += gaps[-1]
    assert type(get(mangled)) is SPELLINGS[spelling], repr(mangled)


@pytest.mark.parametrize(
    "spec", ["", "   ", "l3", "rms->l1", "rmsrms", "rms->", "rms->rms->rms", "conv4d", "spectral norm", "l1"]
)
def test_unknown_names_raise_config_error_listing_known_ones(spec):
    with pytest.raises(ConfigError) as info:
        get(spec)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, DualityError)
    for n in NAMES:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("spec", [42, None, 1.5, ["rms"], RMSToRMS])
def test_non_string_specs_raise_config_error(spec):
    with pytest.raises(ConfigError):
        get(spec)


@given(st.text(max_size=12))
def test_get_either_parses_or_raises_config_error(text):
    try:
        n = get(text)
    except ConfigError:
        return
    assert isinstance(n, Norm) and n.name in NAMES


def test_equality_hash_repr_str():
    norms = [get(n) for n in NAMES]
    for a in norms:
        for b in norms:
            assert (a == b) == (a.name == b.name)
            assert (a != b) == (a.name != b.name)
        assert a == get(a.name) and hash(a) == hash(get(a.name))
        assert str(a) == a.name
        assert get(str(a)) == a
        assert repr(a) == f"{type(a).__name__}()"
        assert eval(repr(a), {type(a).__name__: type(a)}) == a
        assert a != object()
    assert len({*norms, *(get(n) for n in NAMES)}) == len(NAMES)
    assert {get("linear"): 1}[RMSToRMS()] == 1


@norm_names
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(name, protocol):
    norm = get(name)
    back = pickle.loads(pickle.dumps(norm, protocol=protocol))
    assert back == norm and type(back) is type(norm) and hash(back) == hash(norm)
    assert copy.deepcopy(norm) == norm and copy.copy(norm) == norm
    g = torch.randn(2, 3, 3, 3, 3, dtype=F64)
    assert torch.equal(back.dualize(g), norm.dualize(g))


# --------------------------------------------------------------------------------------------
# Transposed storage: <name>.t is the operator norm of Wᵀ (weights read as x @ W)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MATRIX)
@given(data=st.data())
def test_transposed_norm_is_the_norm_of_the_transpose(name, data):
    base, t = get(name), get(name.upper() + ".T")
    assert t.name == name + ".t" and t.spaces == base.spaces and t.decays == base.decays
    g = as_tensor(draw_array(data, data.draw(shapes(name))))
    np.testing.assert_allclose(np64(t.value(g)), np64(base.value(g.mT)), rtol=1e-12)
    np.testing.assert_allclose(np64(t.dual_value(g)), np64(base.dual_value(g.mT)), rtol=1e-12)
    d = t.dualize(g, method="svd")
    np.testing.assert_allclose(np64(d), np64(exact(base, g.mT).mT), rtol=1e-12, atol=1e-300)
    # the defining properties hold for the transposed map too: ‖d‖ = 1, ⟨g, d⟩ = ‖g‖†
    nz = np64(base.dual_value(g.mT)) > 0
    np.testing.assert_allclose(np64(t.value(d)), nz.astype(float), rtol=1e-9, atol=1e-9)
    pairing = (g * d).sum(dim=(-2, -1))
    np.testing.assert_allclose(np64(pairing), np64(t.dual_value(g)), rtol=1e-9)


@pytest.mark.parametrize("name", MATRIX)
def test_transposed_norm_reads_whole_matrices_and_refuses_row_sparse_gradients(name):
    t = get(name + ".t")
    assert t.locality == "matrix"  # a row map on columns: a shard of rows cannot be mapped alone
    assert t.cost((3, 5)) == get(name).cost((5, 3))
    assert t.out_in((3, 5)) == get(name).out_in((5, 3)) != get(name).out_in((3, 5))
    rows = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.randn(2, 4), (5, 4))
    with pytest.raises(ShapeError, match="rows are the matrix's columns"):
        t.dualize(rows)
