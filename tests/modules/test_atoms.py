"""Atoms: the duality properties of docs/design.md §3 on random shapes and masses, well-normedness,
sensitivity 1 in the input, and zero mass → zero update. References are float64 and
independent of dualtype (tests/modules/helpers.py)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dualtype.errors import ConfigError
from dualtype.modules import Bias, Conv2D, Embed, Gain, Head, HeadLinear, Linear, PositionEmbed

from .helpers import F64, feat_norm, img_norm, inner, linf, plain, ref_dual, ref_dualize_norm, ref_value

dims = st.integers(1, 9)
masses = st.floats(0.05, 20.0)
targets = st.floats(0.01, 10.0)


@st.composite
def atoms(draw):
    kind = draw(st.sampled_from(["linear", "headlinear", "embed", "conv", "head", "bias", "gain"]))
    m = draw(masses)
    a, b = draw(dims), draw(dims)
    if kind == "linear":
        mod = Linear(a, b, mass=m)
    elif kind == "headlinear":
        mod = HeadLinear(a, draw(st.integers(1, 3)), b, mass=m)
    elif kind == "embed":
        mod = Embed(a, b, mass=m)
    elif kind == "conv":
        mod = Conv2D(a, b, kernel_size=draw(st.sampled_from([1, 2, 3])), mass=m)
    elif kind == "head":
        mod = Head(a, b, mass=m)
    elif kind == "bias":
        mod = Bias(a, mass=m)
    else:
        mod = Gain(a, mass=m)
    return mod.double()


def _grad(atom, scale=1.0):
    return [torch.randn_like(atom.weight) * scale]


@given(atoms(), targets, st.integers(0, 2**31 - 1))
def test_dualize_hits_target_and_pairs_to_dual_norm(atom, t, seed):
    torch.manual_seed(seed)
    g = _grad(atom, scale=10 ** torch.empty(()).uniform_(-3, 3).item())
    d = atom.dualize(g, target=t, method="svd")
    # modular norm of dualize(g, t) is t (an atom's modular norm is its own norm)
    assert float(atom.norm(plain(d))) == pytest.approx(t, rel=1e-9)
    assert float(ref_value(atom.norm_name, d[0].as_subclass(torch.Tensor))) == pytest.approx(t, rel=1e-9)
    # ⟨g, dualize(g)⟩ = t·‖g‖†, and ‖g‖† matches the reference formula
    dual = atom.dual_norm(g)
    assert float(dual) == pytest.approx(float(ref_dual(atom.norm_name, g[0])), rel=1e-9)
    assert float(inner(g, d)) == pytest.approx(t * float(dual), rel=1e-9)
    # and the map itself matches the reference duality map
    torch.testing.assert_close(d[0].as_subclass(torch.Tensor), t * ref_dualize_norm(atom.norm_name, g[0]), rtol=1e-7, atol=1e-9)


@given(atoms(), st.integers(0, 2**31 - 1))
def test_dual_norm_dominates_pairing_with_unit_directions(atom, seed):
    torch.manual_seed(seed)
    g = _grad(atom)
    dual = float(atom.dual_norm(g))
    for _ in range(8):
        d = torch.randn_like(atom.weight)
        if torch.rand(()) < 0.3:  # sparse directions probe the corners of the unit ball
            d = d * (torch.rand_like(d) < 0.2)
        n = float(ref_value(atom.norm_name, d))
        if n == 0:
            continue
        assert float(inner(g, [d / n])) <= dual * (1 + 1e-9) + 1e-12


@given(atoms())
def test_zero_mass_gives_zero_update_and_zero_gradient_gives_zero(atom):
    g = _grad(atom)
    atom.mass = 0.0
    d = atom.dualize(g, method="svd")
    assert torch.count_nonzero(d[0]) == 0
    assert float(atom.dual_norm(g)) == 0.0
    atom.mass = 1.0
    z = atom.dualize([torch.zeros_like(atom.weight)], method="svd")
    assert torch.count_nonzero(z[0]) == 0 and torch.isfinite(z[0]).all()


def _inputs(atom, n_samples=4):
    """Random inputs of activation norm ≤ 1 for ``atom`` and the function measuring outputs."""
    if isinstance(atom, (Embed,)):
        return None
    if isinstance(atom, Conv2D):
        x = torch.randn(n_samples, atom.c_in, 5, 5, dtype=F64)
        x = x / img_norm(x) * torch.rand((), dtype=F64)
        return x, img_norm, img_norm
    d_in = atom.d_in if hasattr(atom, "d_in") else atom.d
    x = torch.randn(n_samples, 3, d_in, dtype=F64)
    if torch.rand(()) < 0.5:  # energy on one coordinate: the worst case for gains
        x = torch.zeros_like(x)
        x[..., torch.randint(d_in, ())] = 1.0
    x = x / feat_norm(x) * torch.rand((), dtype=F64)
    out_norm = linf if isinstance(atom, Head) else feat_norm
    return x, feat_norm, out_norm


@given(atoms(), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_well_normed_and_sensitivity_one(atom, radius, seed):
    """‖w‖ ≤ 1 and ‖x‖ ≤ 1 ⇒ ‖M(w, x)‖ ≤ 1 (Bias: ≤ 2, it is x + b); and
    ‖M(x) − M(y)‖ ≤ 1·‖x − y‖ (measured ratios recorded in the report)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        atom.weight.normal_()
    atom.project_(radius)
    assert float(ref_value(atom.norm_name, atom.weight.detach())) <= radius + 1e-12
    if isinstance(atom, Embed):
        with torch.no_grad():
            tokens = torch.randint(atom.vocab, (4, 3))
            assert float(feat_norm(atom(tokens))) <= radius + 1e-12
            # one-hot inputs e_i, e_j are at ℓ1 distance 2
            a, b = atom(torch.tensor([0])), atom(torch.tensor([atom.vocab - 1]))
            assert float(feat_norm(a - b)) / 2 <= atom.sensitivity + 1e-12
        return
    x, in_norm, out_norm = _inputs(atom)
    with torch.no_grad():
        if isinstance(atom, Bias):  # x + b: ‖x‖ + ‖b‖
            assert float(out_norm(atom(x))) <= float(in_norm(x)) + radius + 1e-12
        else:  # linear in x: ‖M(w, x)‖ ≤ ‖w‖·‖x‖ ≤ 1
            assert float(out_norm(atom(x))) <= radius * float(in_norm(x)) + 1e-12
        y = x + 1e-3 * torch.randn_like(x) if torch.rand(()) < 0.5 else torch.randn_like(x) / 3
        num, den = float(out_norm(atom(x) - atom(y))), float(in_norm(x - y))
        assert num <= atom.sensitivity * den * (1 + 1e-9) + 1e-15


def test_position_embed_slices_the_table():
    pe = PositionEmbed(5, 3)
    out = pe(torch.zeros(2, 4, dtype=torch.long))
    torch.testing.assert_close(out[1], pe.weight[:4].detach())
    with pytest.raises(Exception):
        pe(torch.zeros(1, 6, dtype=torch.long))


def test_init_at_unit_norm():
    for atom in [Linear(7, 3), Linear(3, 7), HeadLinear(8, 2, 4), Embed(11, 4), Conv2D(3, 5, 3), Head(6, 4), Gain(5)]:
        assert float(ref_value(atom.norm_name, atom.weight.detach())) == pytest.approx(1.0, rel=1e-5), atom


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_mass_rejected(bad):
    with pytest.raises(ConfigError):
        Linear(2, 2, mass=bad)
    lin = Linear(2, 2)
    with pytest.raises(ConfigError):
        lin.mass = bad


def test_gain_uses_linf_because_rms_would_not_bound_the_output():
    """The reason for ℓ∞ on gains, measured: with RMS(g) = 1 a gain can amplify an input that
    sits on one coordinate by √d; with ‖g‖_∞ = 1 it cannot."""
    d = 16
    g = torch.zeros(d, dtype=F64)
    g[0] = math.sqrt(d)  # RMS(g) = 1, ‖g‖_∞ = 4
    x = torch.zeros(d, dtype=F64)
    x[0] = math.sqrt(d)  # RMS(x) = 1
    assert float(feat_norm(g * x)) == pytest.approx(math.sqrt(d))
    gain = Gain(d).double()
    with torch.no_grad():
        gain.weight.copy_(g)
    gain.project_(1.0)
    with torch.no_grad():
        assert float(feat_norm(gain(x))) <= 1 + 1e-12
