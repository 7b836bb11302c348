"""Regression tests for issue 13 (reliability), the runtime items in tensor, norms, kernels.

Each test reproduces one entry of the issue; the setup ``S`` of the issue is :func:`setup`.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

import dualtype
from dualtype import (
    ConfigError,
    DualityError,
    NonFiniteError,
    NormMismatchError,
    ShapeError,
    assume_primal,
    dual,
    dualize,
    role,
)
from dualtype import norms as N
from dualtype.kernels import METHODS, orthogonalize, orthogonalize_svd
from helpers import not_type_error, plain

LR = 0.1


def setup():
    """The issue's ``S``: a typed Linear after one backward."""
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    m(torch.randn(2, 4)).sum().backward()
    return m, m.weight, m.weight.grad



# --- item 5: vector_to_parameters --------------------------------------------------------


def test_vector_to_parameters_refuses_a_raw_gradient_vector():
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    m, p, _ = setup()
    before = [plain(q) for q in m.parameters()]
    params = list(m.parameters())
    with torch.no_grad():
        vec = parameters_to_vector(params) - LR * parameters_to_vector([q.grad for q in params])
        with pytest.raises(DualityError, match="vector_to_parameters") as info:
            vector_to_parameters(vec, params)  # noqa: DTL002 (refused on purpose)
    not_type_error(info)
    for q, b in zip(m.parameters(), before):
        assert torch.equal(plain(q), b)


def test_vector_to_parameters_still_takes_plain_and_primal_vectors():
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    m, p, g = setup()
    params = list(m.parameters())
    with torch.no_grad():
        vector_to_parameters(parameters_to_vector(params) * 0.5, params)
        d = parameters_to_vector([dualize(q.grad) for q in params])
        assert role(d) == "primal"
        vector_to_parameters(parameters_to_vector(params) - LR * d, params)


def test_vector_to_parameters_checks_the_norm_of_a_primal_vector():
    from torch.nn.utils import vector_to_parameters

    m, p, g = setup()
    wrong = dualize(plain(g), "l2")  # Primal[l2] for a weight of another norm
    with torch.no_grad(), pytest.raises(NormMismatchError):
        vector_to_parameters(wrong.flatten(), [p])


# --- the weight registry (items 8 and 13, tensor side) -------------------------------------


def test_registrations_stack_so_unregistering_a_submodule_keeps_the_parent_guard():
    from dualtype.tensor import register_weight, unregister_weight

    p = nn.Parameter(torch.randn(3, 4))
    register_weight(p, "0.weight", N.get("rms->rms"))  # typed(model)
    register_weight(p, "weight", N.get("rms->rms"))  # typed(model[0])
    unregister_weight(p)  # untyped(model[0])
    g = dual(torch.randn(3, 4), "rms->rms")
    with torch.no_grad(), pytest.raises(DualityError, match="'0.weight'"):
        p.data.sub_(g)
    unregister_weight(p, "0.weight")
    with torch.no_grad():
        p.data.sub_(g)  # p.data is a plain view again: nothing registered


def test_refresh_weight_follows_a_parameter_to_its_new_storage():
    from dualtype.tensor import refresh_weight, register_weight, unregister_weight

    m = nn.Linear(4, 3)
    register_weight(m.weight, "weight", N.get("rms->rms"))
    m.double()  # replaces m.weight.data: the registry still names the old storage
    g = dual(torch.randn(3, 4, dtype=torch.float64), "rms->rms")
    try:
        refresh_weight(m.weight)
        with torch.no_grad(), pytest.raises(DualityError, match="'weight'"):
            m.weight.data.sub_(g)
    finally:
        unregister_weight(m.weight)


def test_registered_weights_can_be_swapped():
    """torch.utils.swap_tensors (swap-on-conversion, assign loads) refuses a tensor that has a
    weakref; the registry holds none to the parameter."""
    import weakref

    from dualtype.tensor import register_weight

    p, q = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(3, 4))
    register_weight(p, "weight", N.get("rms->rms"))
    assert weakref.getweakrefcount(p) == 0
    torch.utils.swap_tensors(p, q)  # the entry dies with the storage it names


def test_flat_views_in_one_storage_are_distinct_weights():
    from dualtype.tensor import register_weight, unregister_weight

    flat = torch.zeros(16 + 4)
    w, b = nn.Parameter(flat[:16].view(4, 4)), nn.Parameter(flat[16:])
    register_weight(w, "weight", N.get("rms->rms"))
    register_weight(b, "bias", N.get("rms"))
    try:
        with torch.no_grad():
            w.data.sub_(LR * dualize(torch.randn(4, 4), "rms->rms"))
            b.data.sub_(LR * dualize(torch.randn(4), "rms"))  # was a NormMismatchError
            with pytest.raises(NormMismatchError, match="'bias'"):
                b.data.sub_(dualize(torch.randn(4), "l2"))
            with pytest.raises(DualityError, match="'weight'"):
                w.data.sub_(dual(torch.randn(4, 4), "rms->rms"))
    finally:
        unregister_weight(w)
        unregister_weight(b)


def test_zero_size_weights_do_not_collide():
    from dualtype.tensor import register_weight, unregister_weight

    params = [nn.Parameter(torch.empty(0, 4)), nn.Parameter(torch.empty(0)),
              nn.Parameter(torch.empty(3, 0))]
    for p, norm in zip(params, ["rms->rms", "rms", "rms->rms"]):
        register_weight(p, "p", N.get(norm))
    try:
        with torch.no_grad():
            params[0].data.sub_(dualize(torch.zeros(0, 4), "rms->rms"))
            params[1].data.sub_(dualize(torch.zeros(0), "rms"))
    finally:
        for p in params:
            unregister_weight(p)


# --- item 6: aten overloads ---------------------------------------------------------------


ATEN_FORMS = {
    "sub_.Tensor": lambda p, g: torch.ops.aten.sub_.Tensor(p, g),
    "add_.Tensor alpha": lambda p, g: torch.ops.aten.add_.Tensor(p, g, alpha=-LR),
    "copy_.default": lambda p, g: torch.ops.aten.copy_.default(p, g),
    "_foreach_sub_.List": lambda p, g: torch.ops.aten._foreach_sub_.List([p], [g]),
    "_foreach_add_.List": lambda p, g: torch.ops.aten._foreach_add_.List([p], [g], alpha=-LR),
    "sub_ packet": lambda p, g: torch.ops.aten.sub_(p, g),
    "sub.out": lambda p, g: torch.ops.aten.sub.out(p, g, out=p),
    "addcdiv_": lambda p, g: torch.ops.aten.addcdiv_.default(p, g, torch.ones_like(p)),
}


@pytest.mark.parametrize("form", list(ATEN_FORMS))
def test_aten_overloads_refuse_a_raw_gradient(form):
    m, p, g = setup()
    before = plain(p)
    with torch.no_grad():
        with pytest.raises(DualityError, match="weight") as info:
            ATEN_FORMS[form](p, g)
    not_type_error(info)
    assert torch.equal(plain(p), before)


@pytest.mark.parametrize("form", ["sub_.Tensor", "copy_.default", "_foreach_sub_.List"])
def test_aten_overloads_accept_a_dualized_update(form):
    m, p, g = setup()
    d = LR * dualize(g)
    expect = plain(d) if form == "copy_.default" else plain(p) - plain(d)
    with torch.no_grad():
        ATEN_FORMS[form](p, d)
    torch.testing.assert_close(plain(p), expect)


def test_aten_overload_norm_mismatch():
    m, p, g = setup()
    with torch.no_grad(), pytest.raises(NormMismatchError):
        torch.ops.aten.sub_.Tensor(p, dualize(g.as_subclass(torch.Tensor), "l2"))


def test_aten_overload_on_a_buffer_promotes_it():
    _, _, g = setup()
    buf = torch.zeros(3, 4)
    torch.ops.aten.add_.Tensor(buf, g)
    assert role(buf) == "dual"


# --- item 7 / 12: sparse gradients --------------------------------------------------------


def sparse_embedding():
    e = nn.Embedding(10, 4, sparse=True)
    dualtype.typed(e)
    e(torch.tensor([1, 2, 2])).sum().backward()
    return e


def test_sparse_constructor_keeps_the_tag():
    g = sparse_embedding().weight.grad.coalesce()
    rebuilt = torch.sparse_coo_tensor(g._indices(), g._values() * 2, g.shape)
    assert role(rebuilt) == "dual"
    assert role(torch.sparse_coo_tensor(g._indices().as_subclass(torch.Tensor),
                                        torch.ones(2, 4), g.shape)) is None


@pytest.mark.parametrize("opt", [torch.optim.Adagrad, torch.optim.SparseAdam, torch.optim.SGD])
def test_torch_optimizers_refuse_sparse_raw_gradients(opt):
    e = sparse_embedding()
    before = plain(e.weight)
    with pytest.raises(DualityError) as info:
        opt(e.parameters(), lr=LR).step()
    not_type_error(info)
    assert torch.equal(plain(e.weight), before)


@pytest.mark.parametrize("norm", ["l1->rms", "rms->linf", "l2", "rms", "linf", "rms->rms"])
def test_dualize_sparse_matches_dense_on_touched_rows(norm):
    g = sparse_embedding().weight.grad
    method = "svd" if norm == "rms->rms" else None  # compare maps, not kernel rounding
    d = dualize(plain(g), norm, method=method)
    assert d.is_sparse and role(d) == "primal"
    dense = N.get(norm).dualize(plain(g).to_dense(), method=method)
    torch.testing.assert_close(plain(d).to_dense(), dense, rtol=1e-5, atol=1e-6)
    # value and dual value work too, and agree with the dense ones
    n = N.get(norm)
    torch.testing.assert_close(n.dual_value(plain(g)), n.dual_value(plain(g).to_dense()))
    torch.testing.assert_close(n.value(plain(g)), n.value(plain(g).to_dense()))


def test_sparse_embedding_update_with_dualize_applies():
    e = sparse_embedding()
    before = plain(e.weight)
    with torch.no_grad():
        e.weight -= LR * dualize(e.weight.grad)
    rows = (plain(e.weight) - before).norm(dim=1)
    assert rows[1] > 0 and rows[2] > 0 and rows[0] == 0


@pytest.mark.parametrize("layout", ["csr", "coo2"])
def test_sparse_layouts_without_row_structure_are_refused_clearly(layout):
    dense = torch.zeros(6, 4)
    dense[1, 2] = 1.0
    s = dense.to_sparse_csr() if layout == "csr" else dense.to_sparse()
    with pytest.raises(ShapeError, match="sparse"):
        dualize(s, "rms->rms")
    with pytest.raises(ShapeError, match="sparse"):
        dualize(torch.zeros(2, 3, 3, 3).to_sparse(), "conv2d")


# --- item 9: complex tensors --------------------------------------------------------------


def cplx(*shape, dtype=torch.complex128):
    return torch.randn(*shape, dtype=dtype)


def pairing(g, t):
    """⟨g, t⟩ = Re Σ conj(g)·t: the real pairing under which torch's complex gradient is the
    steepest-ascent direction."""
    return (plain(g).conj() * plain(t)).real.sum()


def test_complex_issue_reproducer():
    d = dualize(torch.tensor([[1j, 2j]]), "l2")
    torch.testing.assert_close(plain(d), torch.tensor([[1j, 2j]]) / math.sqrt(5))


@pytest.mark.parametrize("norm", ["l2", "rms", "linf", "rms->rms", "l1->rms", "rms->linf", "conv2d"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_duality_maps(norm, dtype):
    n = N.get(norm)
    g = cplx(2, 3, 5, 4, dtype=dtype) if norm == "conv2d" else cplx(5, 3, dtype=dtype)
    d = n.dualize(g)
    assert d.dtype == dtype and d.shape == g.shape
    tol = 1e-4 if dtype == torch.complex64 else 1e-9
    # ‖dualize(g)‖ = 1 and ⟨g, dualize(g)⟩ = ‖g‖†
    assert abs(n.value(d).item() - 1.0) < tol
    assert abs(pairing(g, d).item() - n.dual_value(g).item()) < tol * n.dual_value(g).item()
    # the dual value dominates the pairing with random unit vectors
    for _ in range(3):
        t = cplx(*g.shape, dtype=dtype)
        t = t / n.value(t)
        assert pairing(g, t).item() <= n.dual_value(g).item() * (1 + tol)


def test_complex_spectral_matches_svd():
    g = cplx(6, 9)
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    torch.testing.assert_close(orthogonalize(g), U @ Vh)
    torch.testing.assert_close(plain(dualize(g, "rms->rms")), math.sqrt(6 / 9) * (U @ Vh))


def test_modular_sgd_updates_the_imaginary_part_too():
    m = nn.Linear(4, 3, bias=False, dtype=torch.complex64)
    opt = dualtype.ModularSGD(m, lr=LR)
    m(torch.randn(2, 4, dtype=torch.complex64)).abs().sum().backward()
    before = plain(m.weight)
    opt.step()
    step = plain(m.weight) - before
    assert step.real.abs().max() > 0 and step.imag.abs().max() > 0


# --- item 10: denormals and the no-NaN property -------------------------------------------


def test_denormal_issue_reproducer_is_zero_not_nan():
    d = dualize(torch.tensor([[1e-45, 0.0], [0.0, 0.0]]), "rms->rms")
    assert torch.equal(plain(d), torch.zeros(2, 2))


MAP_NORMS = ["l2", "rms", "linf", "rms->rms", "l1->rms", "rms->linf", "conv2d"]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@st.composite
def finite_gradients(draw):
    dtype = draw(st.sampled_from(FLOAT_DTYPES + [torch.complex64, torch.complex128]))
    norm = draw(st.sampled_from(MAP_NORMS))
    shape = draw(st.sampled_from([(2, 3, 2, 2), (1, 1, 1, 1)] if norm == "conv2d"
                                 else [(1, 1), (3, 5), (5, 3), (2, 4, 4), (7, 2)]))
    fi = torch.finfo(dtype)  # complex: the finfo of its real part
    # magnitudes from the smallest denormal of the dtype up to 1e38 (or the dtype's max)
    lo = math.log10(fi.smallest_normal * fi.eps)
    hi = min(38.0, math.log10(fi.max))
    n = math.prod(shape)
    exps = draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n))
    zeros = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    vals = [0.0 if z else s * 10.0 ** e for e, s, z in zip(exps, signs, zeros)]
    g = torch.tensor(vals, dtype=torch.float64).reshape(shape)
    g = g.clamp(-fi.max, fi.max)
    if dtype.is_complex:  # the same magnitudes at random phases
        phase = torch.tensor(draw(st.lists(st.floats(0, 6.283), min_size=n, max_size=n)),
                             dtype=torch.float64).reshape(shape)
        g = torch.polar(g.abs(), phase) * g.sign()
    g = g.to(dtype)
    method = draw(st.sampled_from([None, *METHODS]))
    return g, norm, method


@given(finite_gradients())
@example((torch.tensor([[1e-45, 0.0], [0.0, 0.0]]), "rms->rms", None))  # the issue's reproducer
@example((torch.tensor([[1e-45, 0.0], [0.0, 1e-45]]), "rms->rms", "gram"))
@example((torch.zeros(2, 3, dtype=torch.float16), "rms->rms", None))  # 1/s² overflowed fp16
@example((torch.full((3, 4), 3e38), "rms->rms", "quintic"))
def test_dualize_never_returns_nan_for_finite_input(case):
    g, norm, method = case
    assert torch.isfinite(g).all()
    d = plain(dualize(g, norm, method=method))
    assert d.dtype == g.dtype and d.shape == g.shape
    assert torch.isfinite(d).all(), (g, norm, method, d)
    # the norms of finite input are numbers too (they may overflow to Inf, never NaN)
    for f in (N.get(norm).value, N.get(norm).dual_value):
        assert not torch.isnan(f(g)).any(), (g, norm, f)
    v = N.get(norm).value(d.to(torch.complex128 if d.is_complex() else torch.float64)).amax().item()
    # effectively zero maps to zero; anything else to a unit vector (up to kernel accuracy)
    assert v == 0.0 or 0.5 <= v <= 1.6, (g.tolist(), g.dtype, norm, method, v)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("norm", MAP_NORMS)
def test_denormal_only_gradients_map_to_zero_or_a_unit_direction(dtype, norm):
    shape = (2, 3, 2, 2) if norm == "conv2d" else (3, 4)
    fi = torch.finfo(dtype)
    g = torch.zeros(shape, dtype=dtype)
    g.view(-1)[0] = fi.smallest_normal * fi.eps  # the smallest denormal
    g.view(-1)[5] = -fi.smallest_normal / 4
    for method in (None, *METHODS):
        d = plain(dualize(g, norm, method=method))
        assert torch.isfinite(d).all(), (norm, method)


def test_effectively_zero_is_below_the_smallest_normal_of_the_computation():
    tiny32 = torch.finfo(torch.float32).smallest_normal
    # a float32 gradient entirely below float32's smallest normal: zero
    assert not plain(dualize(torch.full((3, 4), tiny32 / 8), "rms->rms")).any()
    assert not plain(dualize(torch.full((3, 4), tiny32 / 8), "l2")).any()
    # the same value is normal in float64: it keeps its direction
    d = plain(dualize(torch.full((3, 4), tiny32 / 8, dtype=torch.float64), "l2"))
    torch.testing.assert_close(d, torch.full((3, 4), 1 / math.sqrt(12), dtype=torch.float64))
    # one normal entry is enough: scale invariance holds from the smallest normal up
    g = torch.zeros(3, 4)
    g[0, 0] = tiny32
    torch.testing.assert_close(plain(dualize(g, "rms->rms", method="svd")),
                               orthogonalize_svd(g) * math.sqrt(3 / 4))
    # the default kernel gets it to within its contract at σ = 1 (not NaN, not zero)
    torch.testing.assert_close(plain(dualize(g, "rms->rms")), orthogonalize_svd(g) * math.sqrt(3 / 4),
                               atol=0.02, rtol=0)


def test_modular_sgd_with_a_denormal_gradient_leaves_finite_weights():
    m = nn.Linear(4, 3)
    opt = dualtype.ModularSGD(m, lr=LR)
    m(torch.randn(2, 4)).sum().backward()
    for p in m.parameters():
        p.grad.mul_(1e-44)
    opt.step()
    assert all(torch.isfinite(p).all() for p in m.parameters())


# --- item 15: the pairing ⟨g, dualize(g)⟩ --------------------------------------------------


def test_pairing_of_dual_and_primal_is_a_plain_number():
    m, p, g = setup()
    d = dualize(g)
    n = N.get("rms->rms")
    for value in ((g * d).sum(), torch.dot(g.flatten(), d.flatten()),
                  torch.vdot(g.flatten(), d.flatten()), torch.inner(g.flatten(), d.flatten()),
                  g.flatten() @ d.flatten(), torch.sum(d * g)):
        assert type(value) is torch.Tensor and value.ndim == 0
        torch.testing.assert_close(value, n.dual_value(g), rtol=2e-2, atol=0)


def test_comparisons_of_dual_and_primal_are_plain():
    _, _, g = setup()
    d = dualize(g)
    assert torch.allclose(g, d) in (True, False)
    assert torch.equal(g, d) in (True, False)
    for t in (g == d, g != d, torch.isclose(g, d), d == g, g < d):
        assert type(t) is torch.Tensor and t.dtype == torch.bool


def test_pairing_density_cannot_flow_into_a_weight():
    m, p, g = setup()
    d = dualize(g)
    before = plain(p)
    with torch.no_grad():
        with pytest.raises(DualityError) as info:
            p -= LR * (g * d)  # noqa: DTL001 (refused on purpose)
        not_type_error(info)
        with pytest.raises(DualityError):
            p.sub_(g + d)  # noqa: DTL002 (a mix: refused on purpose)
    assert torch.equal(plain(p), before)


# --- item 16: float64 accuracy follows the dtype ------------------------------------------


@pytest.mark.parametrize("shape", [(24, 24), (16, 48), (48, 16), (3, 16, 32)])
def test_float64_default_is_accurate(shape):
    g = torch.randn(*shape, dtype=torch.float64)
    ref = orthogonalize_svd(g)
    err = (orthogonalize(g) - ref).norm() / ref.norm()
    assert err < 1e-10
    d = plain(dualize(g, "rms->rms"))
    assert abs(N.get("rms->rms").value(d).amax().item() - 1.0) < 1e-10


def test_float64_ill_conditioned_default_is_accurate():
    U, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(96, 64, dtype=torch.float64))
    # κ = 1e4: the polar factor of the rounded G is itself only determined to ~eps·κ
    g = U @ torch.diag(torch.logspace(0, -4, 64, dtype=torch.float64)) @ V.T
    assert ((orthogonalize(g) - U @ V.T).norm() / math.sqrt(64)).item() < 1e-10


def test_float32_keeps_the_fast_default():
    g = torch.randn(24, 24)
    torch.testing.assert_close(orthogonalize(g), orthogonalize(g, "polar_express"), rtol=0, atol=0)


# --- unclear errors -----------------------------------------------------------------------


@pytest.mark.parametrize("norm", MAP_NORMS)
def test_meta_tensors_propagate_shapes(norm):
    shape = (2, 3, 3, 3) if norm == "conv2d" else (3, 4)
    g = torch.empty(shape, device="meta")
    d = dualize(g, norm)
    assert d.device.type == "meta" and d.shape == g.shape
    n = N.get(norm)
    assert n.value(g).device.type == "meta" and n.dual_value(g).device.type == "meta"


@pytest.mark.parametrize("norm", MAP_NORMS)
def test_empty_tensors_dualize_to_empty(norm):
    for shape in ([(0, 3, 3, 3), (4, 0, 3, 3), (0, 0, 1, 1)] if norm == "conv2d"
                  else [(5, 0), (0, 5), (0, 0)]):
        g = torch.zeros(shape)
        assert plain(dualize(g, norm)).shape == shape
        assert N.get(norm).value(g).numel() >= 0
        N.get(norm).dual_value(g)


def test_bogus_method_is_a_config_error():
    with pytest.raises(ConfigError, match="bogus"):
        dualize(torch.randn(3, 3), "rms->rms", method="bogus")
    with pytest.raises(ConfigError, match="bogus"):
        orthogonalize(torch.randn(3, 3), "bogus")


@pytest.mark.parametrize("norm", MAP_NORMS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_value_and_dual_value_of_nonfinite_input_never_leak_torch_errors(norm, bad):
    shape = (2, 3, 3, 3) if norm == "conv2d" else (3, 4)
    g = torch.randn(shape)
    g.view(-1)[1] = bad
    n = N.get(norm)
    for f in (n.value, n.dual_value):
        try:
            v = f(g)
        except NonFiniteError:
            continue
        assert not torch.isfinite(v).all()  # propagated, like an IEEE reduction


def test_assume_primal_of_a_non_tensor_is_a_clear_error():
    with pytest.raises(ConfigError, match="torch.Tensor"):
        assume_primal([1.0, 2.0], "l2", reason="test")


def test_dualize_of_a_non_tensor_is_a_clear_error():
    for bad in (0.1, [1.0, 2.0], None):
        with pytest.raises(ConfigError, match="torch.Tensor"):
            dualize(bad)
        with pytest.raises(ConfigError, match="torch.Tensor"):
            dualize(bad, "l2")


@pytest.mark.parametrize("kw", [{"steps": -1}, {"steps": 0}, {"steps": 2.5}, {"lower": 0.0},
                                {"lower": 1.5}, {"tol": -1.0}, {"dtype": torch.int32}])
def test_orthogonalize_refuses_bad_arguments(kw):
    with pytest.raises(ConfigError):
        orthogonalize(torch.randn(3, 3), **kw)


def test_config_errors_are_still_value_errors():
    assert issubclass(ConfigError, ValueError) and not issubclass(ConfigError, DualityError)


# --- item 14: torch.compile(backend="aot_eager") -------------------------------------------


def test_aot_eager_primal_update_runs_and_raw_update_is_a_duality_error():
    torch._dynamo.reset()
    g = dual(torch.randn(4, 3), "rms->rms")
    d = dualize(g)
    q = torch.randn(4, 3)
    expect = q - LR * plain(d)

    @torch.compile(backend="aot_eager")
    def step(q, d):
        q.sub_(LR * d)
        return q

    step(q, d)
    torch.testing.assert_close(plain(q), expect)

    p = nn.Parameter(torch.randn(4, 3))
    before = plain(p)

    @torch.compile(backend="aot_eager")
    def raw(p, g):
        with torch.no_grad():
            p.sub_(LR * g)

    with pytest.raises(DualityError) as info:
        raw(p, g)
    not_type_error(info)
    assert torch.equal(plain(p), before)
