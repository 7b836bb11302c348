"""Specification tests for dualtype.typed_model: ``typed(model)`` and torch's own optimizers on it."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import dualtype
from dualtype import ConfigError, DualityError, DualTensor, NormMismatchError, dualize, norm_of, role
from dualtype import norms as N
from dualtype.roles import norm_by_shape, role_from_module
from helpers import assert_unchanged, plain, snapshot


def n_hooks(p) -> int:
    return len(p._post_accumulate_grad_hooks or {})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.conv = nn.Conv2d(2, 3, 3)
        self.blocks = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 6)])
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 4)
        self.gain = nn.Parameter(torch.ones(6))

    def forward(self, tokens, image):
        h = self.emb(tokens) * self.gain
        for b in self.blocks:
            h = torch.tanh(b(h))
        c = self.conv(image).mean()
        return self.head(self.norm(h)).pow(2).sum() + c


def batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (3, 5), generator=gen), torch.randn(2, 2, 5, 5, generator=gen)


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net()


def backward(model, seed=1):
    model(*batch(seed)).backward()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def mlp_backward(model, seed=1):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    model(x).pow(2).sum().backward()


# --- default and overridden norms --------------------------------------------------------


def test_default_norms_by_layer_type():
    model = make_net()
    h = dualtype.typed(model)
    expected = {
        "emb.weight": "l1->rms",
        "conv.weight": "conv2d",
        "conv.bias": "rms",
        "blocks.0.weight": "rms->rms",
        "blocks.0.bias": "rms",
        "blocks.1.weight": "rms->rms",
        "blocks.1.bias": "rms",
        "norm.weight": "rms",
        "norm.bias": "rms",
        "head.weight": "rms->rms",
        "head.bias": "rms",
        "gain": "rms",
    }
    assert h.norms == {k: N.get(v) for k, v in expected.items()}  # by layer type, before a forward
    backward(model)  # the first forward is recorded: head.weight's output is the model's output
    expected["head.weight"] = "rms->linf"
    assert h.norms == {k: N.get(v) for k, v in expected.items()}
    for name, p in model.named_parameters():
        assert isinstance(p.grad, DualTensor), name
        assert norm_of(p.grad) == N.get(expected[name]) and p.grad.param_name == name
    assert "emb.weight" in repr(h) and "l1->rms" in repr(h)


def test_fallback_roles_and_norms():
    assert role_from_module(nn.Linear(2, 3), "weight", nn.Linear(2, 3).weight) == "hidden"
    assert role_from_module(nn.Embedding(3, 2), "weight", nn.Embedding(3, 2).weight) == "embedding"
    conv = nn.Conv2d(1, 2, 3)
    assert role_from_module(conv, "weight", conv.weight) == "conv"
    assert role_from_module(conv, "bias", conv.bias) == "bias"
    assert role_from_module(nn.LayerNorm(3), "weight", nn.LayerNorm(3).weight) == "gain"
    assert role_from_module(nn.Conv1d(1, 2, 3), "weight", nn.Conv1d(1, 2, 3).weight) == "conv"
    tconv = nn.ConvTranspose2d(1, 2, 3)  # weight [in, out, kh, kw]: no conv norm fits
    assert role_from_module(tconv, "weight", tconv.weight) == "other"
    assert norm_by_shape(torch.zeros(3, 4)) == N.RMSToRMS()
    assert norm_by_shape(torch.zeros(3)) == N.RMS()
    assert norm_by_shape(torch.zeros(2, 3, 4)) is None


def test_overrides_by_exact_name_and_glob():
    model = make_net()
    h = dualtype.typed(model, norms={"head.weight": "rms->linf", "*.bias": "l2",
                                     "blocks.*.weight": "l2", "blocks.1.weight": "linf"})
    norms = h.norms
    assert norms["head.weight"] == N.RMSToLInf()
    assert norms["blocks.1.weight"] == N.LInf()  # exact name beats an earlier glob
    assert norms["blocks.0.weight"] == N.Euclidean()
    assert all(norms[n] == N.Euclidean() for n in norms if n.endswith(".bias"))
    assert norms["emb.weight"] == N.L1ToRMS() and norms["gain"] == N.RMS()  # defaults kept
    backward(model)
    assert norm_of(model.head.weight.grad) == N.RMSToLInf()
    assert norm_of(model.conv.bias.grad) == N.Euclidean()


def test_first_matching_glob_wins():
    h = dualtype.typed(mlp(), norms={"*.weight": "l2", "0.*": "linf"})
    assert h.norms["0.weight"] == N.Euclidean() and h.norms["0.bias"] == N.LInf()


def test_unused_override_is_config_error():
    model = mlp()
    with pytest.raises(ConfigError, match=r"nope\.\*") as info:
        dualtype.typed(model, norms={"nope.*": "l2", "0.weight": "l2"})
    assert "0.weight" in str(info.value)  # lists the parameters there are
    assert not isinstance(info.value, TypeError)
    mlp_backward(model)
    assert role(model[0].weight.grad) is None  # nothing half-installed


def test_unknown_norm_name_is_config_error():
    with pytest.raises(ConfigError, match="unknown norm"):
        dualtype.typed(mlp(), norms={"0.weight": "spectrall"})


class Tensor3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.experts = nn.Parameter(torch.randn(2, 4, 3))

    def forward(self, x):
        return self.lin(x)


def test_unknown_3d_parameter_falls_back_to_l2_with_a_warning():
    h = dualtype.typed(Tensor3D())
    assert h.norms["experts"] == N.Euclidean()  # layer type unknown, before any forward
    m = Tensor3D()
    dualtype.typed(m)
    with pytest.warns(UserWarning, match="experts"):  # the forward does not use it: one warning
        m(torch.randn(2, 3))
    h = dualtype.typed(Tensor3D(), norms={"experts": "rms->rms"})  # batched matrices
    assert h.norms["experts"] == N.RMSToRMS() and h.norms["lin.weight"] == N.RMSToRMS()


def test_override_that_does_not_fit_the_shape_is_refused():
    with pytest.raises(dualtype.ShapeError, match="0.bias"):
        dualtype.typed(mlp(), norms={"0.bias": "rms->rms"})


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.temperature = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.lin(x)


def test_zero_dim_parameter_gets_rms():
    """A scalar parameter (a temperature, CLIP's logit_scale) is typed under rms."""
    model = Scalar()
    h = dualtype.typed(model)
    assert h.norms["temperature"] == N.RMS()
    model(torch.randn(2, 3)).mul(model.temperature).sum().backward()
    assert norm_of(model.temperature.grad) == N.RMS()
    assert dualize(model.temperature.grad).shape == ()


def test_typed_takes_a_module():
    with pytest.raises(ConfigError, match="nn.Module"):
        dualtype.typed([nn.Linear(2, 2)])


# --- gradients through the training loop -------------------------------------------------


def test_gradient_accumulation_stays_dual_and_sums():
    model, ref = make_net(), make_net()
    dualtype.typed(model)
    backward(model, 1)
    backward(model, 2)
    backward(ref, 1)
    backward(ref, 2)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert isinstance(p.grad, DualTensor), name
        assert p.grad.param_name == name
        assert torch.equal(plain(p.grad), q.grad), name


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    model = make_net()
    dualtype.typed(model)
    backward(model)
    model.zero_grad(set_to_none=set_to_none)
    for p in model.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert plain(p.grad).abs().sum() == 0
    backward(model, 2)
    ref = make_net()
    backward(ref, 2)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert isinstance(p.grad, DualTensor) and p.grad.param_name == name
        assert torch.equal(plain(p.grad), q.grad)


def test_optimizer_zero_grad_then_refused_step():
    model = mlp()
    dualtype.typed(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mlp_backward(model)
        before = snapshot(model)
        with pytest.raises(DualityError):
            opt.step()
        assert_unchanged(model, before)


def test_deepcopy_of_a_typed_model():
    model = make_net()
    dualtype.typed(model, norms={"head.weight": "rms->linf"})
    backward(model)
    clone = copy.deepcopy(model)
    for p, q in zip(model.parameters(), clone.parameters()):
        assert p is not q and n_hooks(p) == 1 and n_hooks(q) == 1
    clone.zero_grad()
    backward(clone, 2)
    for name, q in clone.named_parameters():
        assert isinstance(q.grad, DualTensor) and q.grad.param_name == name
    assert norm_of(clone.head.weight.grad) == N.RMSToLInf()
    assert norm_of(clone.emb.weight.grad) == N.L1ToRMS()
    # the copy's p.data is guarded as a weight of the copy
    with torch.no_grad(), pytest.raises(DualityError, match="head.weight"):
        clone.head.weight.data.sub_(0.1 * clone.head.weight.grad)
    # hooks are not shared: untyping the copy leaves the original typed, and vice versa
    original_grads = {n: plain(p.grad) for n, p in model.named_parameters()}
    dualtype.untyped(clone)
    clone.zero_grad()
    backward(clone)
    assert all(type(q.grad) is torch.Tensor for q in clone.parameters())
    for n, p in model.named_parameters():  # backward on the copy did not touch the original
        assert isinstance(p.grad, DualTensor) and torch.equal(plain(p.grad), original_grads[n])
    model.zero_grad()
    backward(model)
    assert all(isinstance(p.grad, DualTensor) for p in model.parameters())


def test_pickle_whole_model():
    model = make_net()
    dualtype.typed(model, norms={"*.bias": "l2"})
    backward(model)
    loaded = pickle.loads(pickle.dumps(model))
    assert all(n_hooks(p) == 1 for p in loaded.parameters())
    loaded.zero_grad()
    backward(loaded)
    for name, p in loaded.named_parameters():
        assert isinstance(p.grad, DualTensor) and p.grad.param_name == name
    assert norm_of(loaded.head.bias.grad) == N.Euclidean()
    assert norm_of(loaded.head.weight.grad) == N.RMSToLInf()  # the recorded graph was pickled too
    with torch.no_grad(), pytest.raises(DualityError):
        loaded.head.weight.sub_(loaded.head.weight.grad)


def test_state_dict_is_plain_and_loads_into_an_untyped_model():
    model = make_net()
    dualtype.typed(model)
    backward(model)
    sd = model.state_dict()
    assert all(type(v) is torch.Tensor for v in sd.values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    sd2 = torch.load(buf, weights_only=True)
    fresh = make_net(seed=5)
    fresh.load_state_dict(sd2)
    for (n, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(plain(p), plain(q)), n
    backward(fresh)
    assert all(type(p.grad) is torch.Tensor for p in fresh.parameters())
    # and a typed model takes a state dict without losing its typing
    model.load_state_dict(make_net(seed=6).state_dict())
    model.zero_grad()
    backward(model)
    assert all(isinstance(p.grad, DualTensor) for p in model.parameters())


def test_save_load_weights_only_of_typed_gradients_and_updates():
    model = make_net()
    dualtype.typed(model)
    backward(model)
    grads = {n: p.grad for n, p in model.named_parameters()}
    updates = {n: dualize(g) for n, g in grads.items()}
    buf = io.BytesIO()
    torch.save({"grads": grads, "updates": updates}, buf)
    buf.seek(0)
    out = torch.load(buf, weights_only=True)
    for n, g in grads.items():
        lg, lu = out["grads"][n], out["updates"][n]
        assert role(lg) == "dual" and role(lu) == "primal"
        assert norm_of(lg) == norm_of(g) == norm_of(lu)
        assert lg.param_name == n and lu.param_name == n
        assert torch.equal(plain(lg), plain(g)) and torch.equal(plain(lu), plain(updates[n]))


def test_optimizer_state_with_dual_momentum_survives_save_load():
    model = mlp()
    dualtype.typed(model)
    mlp_backward(model)
    state = {n: torch.zeros_like(p.grad).add_(p.grad) for n, p in model.named_parameters()}
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    out = torch.load(buf, weights_only=True)
    p = model[0].weight
    assert isinstance(out["0.weight"], DualTensor) and out["0.weight"].param_name == "0.weight"
    with torch.no_grad(), pytest.raises(DualityError):
        p.sub_(0.1 * out["0.weight"])


@pytest.mark.parametrize("how", ["untyped", "handle.remove"])
def test_removal_makes_gradients_plain(how):
    model = make_net()
    handle = dualtype.typed(model)
    backward(model)
    if how == "untyped":
        assert dualtype.untyped(model) is model
    else:
        handle.remove()
    assert all(type(p.grad) is torch.Tensor for p in model.parameters())
    assert all(n_hooks(p) == 0 for p in model.parameters())
    model.zero_grad()
    backward(model)
    assert all(type(p.grad) is torch.Tensor for p in model.parameters())
    # a raw update is plain torch again, on p and on p.data
    p = model.head.weight
    before = plain(p)
    with torch.no_grad():
        p.sub_(0.1 * p.grad)
        p.data.sub_(0.1 * p.grad)
    assert torch.equal(plain(p), before - 0.1 * plain(p.grad) - 0.1 * plain(p.grad))
    dualtype.untyped(model)  # idempotent
    handle.remove()


def test_typed_twice_does_not_double_hook_and_retypes():
    model = make_net()
    dualtype.typed(model)
    h2 = dualtype.typed(model, norms={"head.weight": "rms->linf"})
    assert all(n_hooks(p) == 1 for p in model.parameters())
    backward(model)
    assert norm_of(model.head.weight.grad) == N.RMSToLInf()
    assert h2.norms["head.weight"] == N.RMSToLInf()
    dualtype.untyped(model)
    assert all(n_hooks(p) == 0 for p in model.parameters())


def test_tied_weights_get_one_hook_and_one_norm():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    h = dualtype.typed(model)
    assert list(h.norms) == [n for n, _ in model.named_parameters()] == ["emb.weight"]
    assert n_hooks(model.emb.weight) == 1
    model.head(model.emb(torch.tensor([1, 2]))).sum().backward()
    assert norm_of(model.emb.weight.grad) == N.L1ToRMS()


def test_frozen_parameters_are_still_guarded_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[0].weight.requires_grad_(False)
    dualtype.typed(model)
    model(torch.randn(2, 4)).sum().backward()
    assert model[0].weight.grad is None and isinstance(model[1].weight.grad, DualTensor)
    before = snapshot(model)
    with torch.no_grad():
        for t in (model[0].weight, model[0].weight.data):
            with pytest.raises(DualityError, match=r"weight '0\.weight' of norm 'rms->rms'"):
                t.sub_(0.1 * model[1].weight.grad)
    assert_unchanged(model, before)


def test_primal_of_another_norm_into_a_parameter_of_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    dualtype.typed(model, norms={"0.weight": "rms->rms", "1.weight": "l2"})
    model(torch.randn(2, 4)).sum().backward()
    before = snapshot(model)
    with torch.no_grad():
        with pytest.raises(NormMismatchError, match=r"'1\.weight' of norm 'l2'"):
            model[1].weight.sub_(0.1 * dualize(model[0].weight.grad))
        with pytest.raises(NormMismatchError):
            torch._foreach_sub_(list(model.parameters()),
                                [dualize(q.grad) for q in reversed(list(model.parameters()))])
    assert_unchanged(model, before)


# --- torch's own optimizers --------------------------------------------------------------

OPTIMIZERS = {
    "SGD(foreach=False)": lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=False),
    "SGD(foreach=True)": lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=True),
    "SGD(momentum, foreach=False)": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False),
    "SGD(momentum, foreach=True)": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
    "SGD(weight_decay)": lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1, foreach=False),
    "SGD(weight_decay, foreach)": lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1, foreach=True),
    "SGD(fused=True)": lambda ps: torch.optim.SGD(ps, lr=0.1, fused=True),
    "Adam(foreach=False)": lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=False),
    "Adam(foreach=True)": lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=True),
    "Adam(weight_decay)": lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1, foreach=False),
    "Adam(fused=True)": lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_torch_optimizers_refuse_before_changing_any_weight(name):
    model = make_net()
    dualtype.typed(model)
    opt = OPTIMIZERS[name](model.parameters())
    backward(model)
    before = snapshot(model)
    with pytest.raises(DualityError) as info:
        opt.step()
    assert not isinstance(info.value, TypeError)
    assert "nothing was changed" in str(info.value) and "ModularSGD" in str(info.value)
    assert_unchanged(model, before)


@pytest.mark.parametrize("foreach", [False, True])
def test_adamw_is_refused(foreach):
    model = make_net()
    dualtype.typed(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, foreach=foreach)
    backward(model)
    # AdamW would apply its decoupled weight decay (a legal primal update) before the refused
    # addcdiv_: the global step pre-hook refuses first, so nothing is decayed either
    before = snapshot(model)
    with pytest.raises(DualityError, match="AdamW would step .* nothing was changed"):
        opt.step()
    assert_unchanged(model, before)


@pytest.mark.parametrize("foreach", [False, True])
def test_torch_sgd_applies_dualized_gradients(foreach):
    model = make_net()
    dualtype.typed(model)
    backward(model)
    before = snapshot(model)
    updates = {}
    for n, p in model.named_parameters():
        p.grad = dualize(p.grad)
        updates[n] = plain(p.grad)
    torch.optim.SGD(model.parameters(), lr=0.1, foreach=foreach).step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(plain(p), before[n] - 0.1 * updates[n], rtol=0, atol=1e-6)
