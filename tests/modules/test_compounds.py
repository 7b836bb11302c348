"""Compounds: random module trees (composition, concatenation, sum, scaling, residual,
zero masses) against the binary recursion of docs/design.md §3 written out in helpers.py; the
duality properties; derived (never stale) mass and sensitivity; well-normedness and the
Lipschitz bounds in input and weights; a hand-computed 3-layer MLP; MLP, Attention, GPT."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dualtype.errors import ConfigError, ShapeError
from dualtype.modules import (
    GELU,
    GPT,
    MLP,
    Add,
    Attention,
    Bias,
    Composition,
    Concatenation,
    Gain,
    Linear,
    Mul,
    ReLU,
    compose,
    concat,
    repeat,
    residual,
)

from .helpers import (
    F64,
    feat_norm,
    inner,
    linf,
    plain,
    ref_dual_norm,
    ref_dualize,
    ref_norm,
    ref_value,
)

D = 4  # width of every random tree (all maps [.., D] → [.., D])

mass_st = st.one_of(st.just(0.0), st.floats(0.1, 5.0))
alpha_st = st.one_of(st.floats(0.2, 3.0), st.floats(-3.0, -0.2))
leaf_st = st.one_of(
    st.tuples(st.just("linear"), mass_st),
    st.tuples(st.just("gain"), mass_st),
    st.tuples(st.just("bias"), mass_st),
    st.tuples(st.just("relu")),
    st.tuples(st.just("gelu")),
    st.tuples(st.just("mul"), alpha_st),
)


def _tree(children):
    kids = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.tuples(st.just("compose"), kids),
        st.tuples(st.just("sum"), kids),
        st.tuples(st.just("concat_add"), kids),
        st.tuples(st.just("scale"), alpha_st, children),
        st.tuples(st.just("residual"), st.floats(1.5, 8.0), children),
    )


tree_st = st.recursive(leaf_st, _tree, max_leaves=7)


def build(spec):
    kind = spec[0]
    if kind == "linear":
        return Linear(D, D, mass=spec[1])
    if kind == "gain":
        return Gain(D, mass=spec[1])
    if kind == "bias":
        return Bias(D, mass=spec[1])
    if kind == "relu":
        return ReLU()
    if kind == "gelu":
        return GELU()
    if kind == "mul":
        return Mul(spec[1])
    if kind == "compose":
        return Composition(*[build(s) for s in spec[1]])
    if kind == "sum":
        from dualtype.modules import Sum

        return Sum(*[build(s) for s in spec[1]])
    if kind == "concat_add":
        return Composition(Concatenation(*[build(s) for s in spec[1]]), Add())
    if kind == "scale":
        return spec[1] * build(spec[2])
    if kind == "residual":
        return residual(build(spec[2]), spec[1])
    raise ValueError(kind)


def ref_mass(spec) -> float:
    if spec[0] in ("linear", "gain", "bias"):
        return spec[1]
    if spec[0] in ("relu", "gelu", "mul"):
        return 0.0
    if spec[0] in ("compose", "sum", "concat_add"):
        return sum(ref_mass(s) for s in spec[1])
    return ref_mass(spec[2])


def ref_sensitivity(spec) -> float:
    kind = spec[0]
    if kind in ("linear", "gain", "bias", "relu", "gelu"):
        return 1.0
    if kind == "mul":
        return abs(spec[1])
    if kind == "compose":
        return math.prod(ref_sensitivity(s) for s in spec[1])
    if kind in ("sum", "concat_add"):
        return sum(ref_sensitivity(s) for s in spec[1])
    if kind == "scale":
        return abs(spec[1]) * ref_sensitivity(spec[2])
    L = spec[1]
    return (1 - 1 / L) + ref_sensitivity(spec[2]) / L


def out_bound(spec, b: float) -> float:
    """Bound on the output norm for input norm ≤ b and every atom's weight norm ≤ 1."""
    kind = spec[0]
    if kind in ("linear", "gain", "relu", "gelu"):
        return b
    if kind == "bias":
        return b + 1.0
    if kind == "mul":
        return abs(spec[1]) * b
    if kind == "compose":
        for s in spec[1]:
            b = out_bound(s, b)
        return b
    if kind in ("sum", "concat_add"):
        return sum(out_bound(s, b) for s in spec[1])
    if kind == "scale":
        return abs(spec[1]) * out_bound(spec[2], b)
    L = spec[1]
    return (1 - 1 / L) * b + out_bound(spec[2], b) / L


def _randomize(module, seed, radius_max=1.0):
    """Random weights, each atom at a random norm ≤ radius_max."""
    g = torch.Generator().manual_seed(seed)
    from dualtype.modules import Atom

    for m in module.modules():
        if isinstance(m, Atom):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
            m.project_(radius_max * float(torch.rand((), generator=g)))


def _grads(module, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) * 10 ** (4 * float(torch.rand((), generator=g)) - 2)
            for p in module.parameters()]


@given(tree_st, st.integers(0, 2**31 - 1))
def test_mass_and_sensitivity_are_derived_recursively(spec, seed):
    net = build(spec)
    assert net.mass == pytest.approx(ref_mass(spec))
    assert net.sensitivity == pytest.approx(ref_sensitivity(spec))


@given(tree_st, st.integers(0, 2**31 - 1))
def test_flattened_norms_equal_the_binary_recursion(spec, seed):
    net = build(spec).double()
    _randomize(net, seed, radius_max=3.0)
    ws = [p.detach() for p in net.parameters()]
    gs = _grads(net, seed + 1)
    assert float(net.norm(ws)) == pytest.approx(float(ref_norm(net, ws)), rel=1e-9, abs=1e-300)
    assert float(net.dual_norm(gs)) == pytest.approx(float(ref_dual_norm(net, gs)), rel=1e-9, abs=1e-300)
    ours, ref = plain(net.dualize(gs, method="svd")), ref_dualize(net, gs)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


@given(tree_st, st.floats(0.01, 10.0), st.integers(0, 2**31 - 1))
def test_dualize_hits_target_pairs_to_dual_norm_and_dominates(spec, t, seed):
    net = build(spec).double()
    gs = _grads(net, seed)
    d = net.dualize(gs, target=t, method="svd")
    dual = float(net.dual_norm(gs))
    if net.mass == 0:
        assert all(torch.count_nonzero(x) == 0 for x in d) and dual == 0.0
        return
    assert float(net.norm(plain(d))) == pytest.approx(t, rel=1e-9)
    assert float(inner(gs, d)) == pytest.approx(t * dual, rel=1e-9)
    # ‖g‖† ≥ ⟨g, u⟩ for random u of modular norm 1 (random directions, then normalized).
    # Zero-mass parameters are frozen, outside the norm's space: u is zero there.
    g = torch.Generator().manual_seed(seed + 7)
    live = [c > 0 for c in net.coefficients()]
    for _ in range(5):
        u = [torch.randn(p.shape, generator=g, dtype=F64) * keep for p, keep in zip(net.parameters(), live)]
        n = float(net.norm(u))
        if n > 0:
            assert float(inner(gs, [x / n for x in u])) <= dual * (1 + 1e-9)


@given(tree_st, st.integers(0, 2**31 - 1))
def test_well_normed_and_input_lipschitz(spec, seed):
    """Atom norms ≤ 1, inputs ≤ 1 ⇒ output ≤ the recursive bound (1 for trees without
    sums or biases); and ‖M(x) − M(y)‖ ≤ s·‖x − y‖ for the derived sensitivity s."""
    net = build(spec).double()
    _randomize(net, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, D, generator=g, dtype=F64)
    x = x / feat_norm(x) * float(torch.rand((), generator=g))
    y = x + 1e-3 * torch.randn(5, D, generator=g, dtype=F64) if seed % 2 else torch.randn(5, D, generator=g, dtype=F64)
    with torch.no_grad():
        assert float(feat_norm(net(x))) <= out_bound(spec, 1.0) * (1 + 1e-9) + 1e-12
        ratio = float(feat_norm(net(x) - net(y))) / float(feat_norm(x - y))
    assert ratio <= net.sensitivity * (1 + 1e-9)


def _weight_step_ratio(net, x, seed, eps=1e-6):
    """‖M(w + εΔ, x) − M(w, x)‖ / (ε‖Δ‖_modular) for a random direction Δ."""
    g = torch.Generator().manual_seed(seed)
    delta = [torch.randn(p.shape, generator=g, dtype=F64) for p in net.parameters()]
    n = float(net.norm(delta))
    with torch.no_grad():
        y0 = net(x)
        for p, d in zip(net.parameters(), delta):
            p.add_(eps * d / n)
        y1 = net(x)
        for p, d in zip(net.parameters(), delta):
            p.sub_(eps * d / n)
    out = linf if y0.shape[-1] == 7 else feat_norm
    return float(out(y1 - y0)) / eps


@settings(max_examples=8)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.lists(st.floats(0.1, 4.0), min_size=4, max_size=4))
def test_output_moves_at_most_the_modular_norm_of_the_weight_step(depth, seed, ms):
    """The point of the modular norm: for well-normed networks at ‖x‖ ≤ 1 and atom norms
    ≤ 1, a weight step Δw moves the output by ≤ ‖Δw‖ (to first order)."""
    torch.manual_seed(seed)
    nets = [
        MLP(5, 6, 7, depth=depth, head=True),
        compose(Linear(5, 6), *[residual(compose(Linear(6, 6), ReLU(), Linear(6, 6)), 2 * depth) for _ in range(depth)],
                ReLU(), Linear(6, 6)),
        Attention(6, 2),
    ]
    for net in nets:
        net = net.double()
        atoms = [m for m in net.modules() if hasattr(m, "weight")]
        for a, m in zip(atoms, ms * 10):
            a.mass = m
        _randomize(net, seed)
        x = torch.randn(3, 4, 5 if not isinstance(net, Attention) else 6, dtype=F64)
        x = x / feat_norm(x)
        assert _weight_step_ratio(net, x, seed) <= 1 + 1e-4


def test_three_layer_mlp_by_hand():
    """W3 ∘ relu ∘ Mul(2) ∘ W2 ∘ relu ∘ W1 with masses 1, 2, 3, written out from §3 in float64."""
    torch.manual_seed(0)
    l1, l2, l3 = Linear(5, 8, mass=1.0), Linear(8, 6, mass=2.0), Linear(6, 3, mass=3.0)
    net = (l3 @ ReLU() @ Mul(2.0) @ l2 @ ReLU() @ l1).double()
    W = [l.weight.detach() for l in (l1, l2, l3)]
    G = [torch.randn_like(w) for w in W]
    spec = lambda w: math.sqrt(w.shape[1] / w.shape[0]) * torch.linalg.matrix_norm(w, 2)  # noqa: E731

    def nuc(g):
        return math.sqrt(g.shape[0] / g.shape[1]) * torch.linalg.matrix_norm(g, "nuc")

    def polar(g):
        U, _, Vh = torch.linalg.svd(g, full_matrices=False)
        return math.sqrt(g.shape[0] / g.shape[1]) * U @ Vh

    # Binary grouping, innermost first (each line is one rule of §3):
    # B = W2 ∘ relu ∘ W1 (s after W1 = s_relu·s_W2 = 1), m_B = 3
    mB = 3.0
    norm_B = max(1 * (mB / 1) * spec(W[0]), (mB / 2) * spec(W[1]))
    # A = Mul(2) ∘ B: Mul has mass 0 (dropped), so ‖·‖_A = s_Mul·(m_A/m_B)·‖·‖_B, m_A = 3
    norm_A = 2 * (mB / mB) * norm_B
    # net = W3 ∘ relu ∘ A (s after A = s_relu·s_W3 = 1), m = 6
    m = 6.0
    norm = max(1 * (m / mB) * norm_A, (m / 3) * spec(W[2]))
    assert float(net.norm()) == pytest.approx(float(norm), rel=1e-12)
    assert float(norm) == pytest.approx(float(max(12 * spec(W[0]), 6 * spec(W[1]), 2 * spec(W[2]))), rel=1e-12)

    dual_B = nuc(G[0]) * 1 / (1 * mB) + nuc(G[1]) * 2 / mB
    dual_A = dual_B * mB / (2 * mB)
    dual = dual_A * mB / (1 * m) + nuc(G[2]) * 3 / m
    assert float(net.dual_norm(G)) == pytest.approx(float(dual), rel=1e-12)

    t = 0.5
    d = plain(net.dualize(G, target=t, method="svd"))
    expect = [t * (mB / m) * (1 / 2) * (1 / mB) * polar(G[0]),  # net ← A ← B factors
              t * (mB / m) * (1 / 2) * (2 / mB) * polar(G[1]),
              t * (3 / m) * polar(G[2])]
    for a, b in zip(d, expect):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert float(net.norm(d)) == pytest.approx(t, rel=1e-12)
    assert net.coefficients() == pytest.approx([1 / 12, 1 / 6, 1 / 2])


def test_mass_reweighting_after_composing_is_reflected():
    a, b = Linear(3, 3), Linear(3, 3)
    inner_net = b @ ReLU() @ a
    c = Linear(3, 3)
    net = c @ (2.0 * inner_net)
    assert net.mass == 3.0 and net.coefficients() == pytest.approx([1 / 6, 1 / 6, 1 / 3])
    a.mass = 4.0  # re-weight one atom deep inside
    # c_a = (m_inner/m)·(1/s_Mul)·(m_a/m_inner) = (5/6)(1/2)(4/5); c_b likewise; c_c = 1/6
    assert net.mass == 6.0 and net.coefficients() == pytest.approx([1 / 3, 1 / 12, 1 / 6])
    inner_net.mass = 1.0  # re-weight a compound: its atoms scale proportionally
    assert (a.mass, b.mass) == pytest.approx((0.8, 0.2)) and net.mass == pytest.approx(2.0)
    net.parts[0].parts[1].alpha = 4.0  # the scale's sensitivity is derived too
    assert net.sensitivity == 4.0 and net.coefficients()[2] == pytest.approx(0.5)


def test_zero_mass_subtree_is_frozen_and_dropped():
    frozen, live = Linear(4, 4, mass=0.0), Linear(4, 4)
    net = (live @ ReLU() @ frozen).double()
    g = [torch.randn(4, 4, dtype=F64) for _ in range(2)]
    d = plain(net.dualize(g, method="svd"))
    assert torch.count_nonzero(d[0]) == 0 and float(ref_value("rms->rms", d[1])) == pytest.approx(1.0)
    with torch.no_grad():
        frozen.weight.mul_(1e6)  # dropped from the norm
    assert float(net.norm()) == pytest.approx(float(ref_value("rms->rms", live.weight.detach())))
    all_frozen = Linear(4, 4, mass=0.0) @ Linear(4, 4, mass=0.0)
    assert all(torch.count_nonzero(x) == 0 for x in all_frozen.dualize()) and float(all_frozen.norm()) == 0


def test_combinator_errors():
    lin = Linear(2, 2)
    with pytest.raises(ConfigError):
        0 * lin
    with pytest.raises(ConfigError):
        0.0 * lin
    with pytest.raises(ConfigError):
        residual(lin, 1)
    with pytest.raises(ConfigError):
        repeat(lin, 0)
    with pytest.raises(ConfigError):
        Composition()
    with pytest.raises(ConfigError):
        Composition(torch.nn.Linear(2, 2))
    shared = Linear(2, 2)
    with pytest.raises(ConfigError, match="exactly one atom"):
        (shared @ ReLU() @ shared).norm()
    net = Linear(2, 3) @ Linear(3, 2)
    with pytest.raises(ShapeError):
        net.dualize([torch.zeros(3, 2)])
    with pytest.raises(ShapeError):
        net.dualize([torch.zeros(3, 2), torch.zeros(2, 3)])  # swapped shapes
    with pytest.raises(ConfigError):
        net.dualize(target=-1.0)


def test_repeat_and_operators():
    block = Linear(3, 3) @ ReLU()
    deep = block ** 4
    assert isinstance(deep, Composition) and len(list(deep.parameters())) == 4
    ws = [p.detach() for p in deep.parameters()]
    assert not any(torch.equal(ws[0], w) for w in ws[1:])  # fresh copies, not shared
    assert deep.mass == 4.0 and deep.sensitivity == 1.0
    assert deep.coefficients() == pytest.approx([0.25] * 4)
    s = Linear(3, 3) + 0.5 * Linear(3, 3)
    assert s.mass == 2.0 and s.sensitivity == 1.5
    assert s.coefficients() == pytest.approx([0.5, 1.0])  # the ½-scaled branch may move twice as far
    c = concat(Linear(3, 2), Linear(3, 4, mass=3.0))
    x = torch.randn(5, 3)
    y1, y2 = c(x)
    assert y1.shape == (5, 2) and y2.shape == (5, 4)
    assert c.coefficients() == pytest.approx([0.25, 0.75]) and c.sensitivity == 2.0
    r = residual(Linear(3, 3), 4)
    torch.testing.assert_close(r(x), 0.75 * x + 0.25 * r.parts[1].parts[0](x))
    assert r.sensitivity == pytest.approx(0.75 + 0.25) and r.coefficients() == pytest.approx([4.0])


# --------------------------------------------------------------------- MLP, Attention, GPT
def _tiny_gpt():
    return GPT(vocab=11, d_model=8, heads=2, layers=2, context=6).double()


@settings(max_examples=5)
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 5.0))
def test_gpt_duality_properties(seed, t):
    torch.manual_seed(seed)
    gpt = _tiny_gpt()
    tokens = torch.randint(11, (2, 5))
    loss = torch.nn.functional.cross_entropy(gpt(tokens).flatten(0, 1), torch.randint(11, (10,)))
    loss.backward()
    gs = [p.grad for p in gpt.parameters()]
    d = gpt.dualize(target=t, method="svd")
    assert float(gpt.norm(plain(d))) == pytest.approx(t, rel=1e-9)
    assert float(inner(gs, d)) == pytest.approx(t * float(gpt.dual_norm()), rel=1e-9)
    assert float(gpt.dual_norm()) == pytest.approx(float(ref_dual_norm(gpt, gs)), rel=1e-9)
    for a, b in zip(plain(d), ref_dualize(gpt, gs)):
        torch.testing.assert_close(a, t * b, rtol=1e-7, atol=1e-10)


def test_gpt_structure_masses_and_sensitivity():
    gpt = GPT(vocab=11, d_model=8, heads=2, layers=3, context=6)
    assert gpt.mass == pytest.approx(1 + 3 + 1)
    # per layer: res(attn) s = (1 − 1/2L) + 3/2L, res(mlp) s = 1; embed ½(1+1) = 1
    L2 = 6
    assert gpt.sensitivity == pytest.approx(((1 - 1 / L2) + 3 / L2) ** 3)
    gpt2 = GPT(vocab=11, d_model=8, heads=2, layers=3, context=6, embed_mass=2.0, blocks_mass=6.0, head_mass=0.5)
    assert gpt2.mass == pytest.approx(8.5)
    assert len(gpt.terms()) == 2 + 3 * 6 + 1


@given(st.integers(0, 2**31 - 1))
@settings(max_examples=10)
def test_gpt_is_well_normed(seed):
    """Every atom at norm ≤ 1 ⇒ every |logit| ≤ 1, for any tokens."""
    gpt = _tiny_gpt()
    _randomize(gpt, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = gpt(torch.randint(11, (3, 6), generator=g))
    assert float(linf(logits)) <= 1 + 1e-12


def test_mlp_structure():
    net = MLP(5, 7, 3, depth=3, head=True)
    assert [type(p).__name__ for p in net.parts] == ["Linear", "ReLU", "Linear", "ReLU", "Head"]
    assert net.coefficients() == pytest.approx([1 / 3] * 3)
    assert MLP(5, 7, 3, depth=1).coefficients() == [1.0]


# --------------------------------------------------------------------- torch integration
def test_real_torch_modules_to_state_dict_optimizer_deepcopy():
    torch.manual_seed(0)
    gpt = _tiny_gpt()
    tokens = torch.randint(11, (2, 6))
    fresh = _tiny_gpt()
    fresh.load_state_dict(gpt.state_dict())
    torch.testing.assert_close(fresh(tokens), gpt(tokens))
    assert len(gpt.state_dict()) == len(list(gpt.parameters()))
    f32 = gpt.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in f32.parameters())
    clone = copy.deepcopy(gpt)
    assert clone.coefficients() == gpt.coefficients()
    opt = torch.optim.SGD(gpt.parameters(), lr=0.1)
    before = [p.detach().clone() for p in gpt.parameters()]
    gpt(tokens).sum().backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, gpt.parameters()))


def test_typed_gradients_go_through_the_door():
    import dualtype
    from dualtype.errors import NormMismatchError
    from dualtype.modules import modular
    from dualtype.tensor import DualTensor, PrimalTensor

    torch.manual_seed(0)
    net = compose(Linear(4, 6), Gain(6), ReLU(), Linear(6, 3))
    handle = dualtype.typed(net, norms=modular(net).norms)
    x = torch.randn(5, 4)
    net(x).pow(2).sum().backward()
    assert all(isinstance(p.grad, DualTensor) for p in net.parameters())
    d = net.dualize(target=0.1)
    assert all(isinstance(u, PrimalTensor) for u in d)
    with torch.no_grad():
        before = float(net(x).pow(2).sum())
        for p, u in zip(net.parameters(), d):
            p -= u  # a typed, dualized update is accepted
        assert float(net(x).pow(2).sum()) < before
    handle.remove()
    # typed() alone reads the same table: the Gain atom's own 'linf', not a default by rank
    assert dualtype.typed(net).norms == modular(net).norms
    net.zero_grad()
    net(x).pow(2).sum().backward()
    assert all(isinstance(u, PrimalTensor) for u in net.dualize())
    # a norm declared against the atom's is refused when the module dualizes
    dualtype.typed(net, norms={"1.weight": "rms"})
    net.zero_grad()
    net(x).pow(2).sum().backward()
    with pytest.raises(NormMismatchError):
        net.dualize()
    dualtype.untyped(net)


def _cnn():
    from dualtype.modules import Conv2D, Flatten, Head

    return compose(Conv2D(3, 4, 3), ReLU(), Conv2D(4, 4, 3, stride=2), GELU(), Flatten(), Head(4 * 3 * 3, 5))


NAMED = {
    "mlp": (lambda: MLP(5, 7, 3, depth=3, head=True), lambda g: torch.randn(4, 5, generator=g, dtype=F64)),
    "attention": (lambda: Attention(8, 2), lambda g: torch.randn(2, 5, 8, generator=g, dtype=F64)),
    "cnn": (_cnn, lambda g: torch.randn(2, 3, 6, 6, generator=g, dtype=F64)),
}


@pytest.mark.parametrize("name", sorted(NAMED))
@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.05, 5.0), ms=st.lists(mass_st, min_size=6, max_size=6))
def test_named_compounds_duality_and_well_normedness(name, seed, t, ms):
    """MLP, Attention and a Conv2D/Flatten/Head CNN with random masses: dualize hits t, pairs
    to t·‖g‖†, matches the binary recursion; unit weights and inputs give outputs ≤ 1."""
    from dualtype.modules import Atom

    from .helpers import img_norm

    make, data = NAMED[name]
    torch.manual_seed(seed)
    net = make().double()
    for a, m in zip([m for m in net.modules() if isinstance(m, Atom)], ms):
        a.mass = m
    g = torch.Generator().manual_seed(seed)
    x = data(g)
    net(x).pow(2).sum().backward()
    gs = [p.grad for p in net.parameters()]
    d = net.dualize(target=t, method="svd")
    if net.mass > 0:
        assert float(net.norm(plain(d))) == pytest.approx(t, rel=1e-9)
    assert float(inner(gs, d)) == pytest.approx(t * float(net.dual_norm()), rel=1e-9, abs=1e-12)
    assert float(net.dual_norm()) == pytest.approx(float(ref_dual_norm(net, gs)), rel=1e-9, abs=1e-12)
    for a, b in zip(plain(d), ref_dualize(net, gs)):
        torch.testing.assert_close(a, t * b, rtol=1e-7, atol=1e-10)
    _randomize(net, seed)
    in_norm = img_norm if name == "cnn" else feat_norm
    out_norm = feat_norm if name == "attention" else linf
    with torch.no_grad():
        assert float(out_norm(net(x / in_norm(x)))) <= 1 + 1e-12
