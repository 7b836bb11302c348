"""AdamW groups inside ModularSGD: the usual Muon + AdamW hybrid as one optimizer, bit-identical
to torch.optim.AdamW on its parameters, with one state_dict and working schedulers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dualtype
from dualtype import ConfigError, NonFiniteError
from dualtype.optim import ModularSGD
from helpers import snapshot


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 8)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 7, bias=False)

    def forward(self, idx):
        return self.head(self.norm(torch.relu(self.hidden(self.emb(idx)))))


def batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randint(7, (4, 5), generator=g), torch.randint(7, (20,), generator=g)


def loss_of(model, step):
    x, y = batch(step)
    return nn.functional.cross_entropy(model(x).flatten(0, 1), y)


def split(model):
    hidden = [model.hidden.weight]
    rest = [p for n, p in model.named_parameters() if n != "hidden.weight"]
    return hidden, rest


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_group_is_bit_identical_to_torch_adamw(foreach, weight_decay):
    torch.manual_seed(0)
    ours = Net()
    ref = copy.deepcopy(ours)
    dualtype.typed(ours)  # typed: the AdamW group's gradients are Dual and leave through assume_primal
    hidden, rest = split(ours)
    opt = ModularSGD([{"params": hidden, "targets": 1.0},
                      {"params": rest, "algorithm": "adamw", "lr": 3e-3, "betas": (0.9, 0.95),
                       "weight_decay": weight_decay, "foreach": foreach}])
    ref_hidden, ref_rest = split(ref)  # the reference: ModularSGD on hidden + torch's AdamW on the rest
    ref_opts = [ModularSGD([{"params": ref_hidden, "targets": 1.0}]),
                torch.optim.AdamW(ref_rest, lr=3e-3, betas=(0.9, 0.95), weight_decay=weight_decay, foreach=foreach)]
    for step in range(5):
        opt.zero_grad()
        loss_of(ours, step).backward()
        opt.step()
        for o in ref_opts:
            o.zero_grad()
        loss_of(ref, step).backward()
        for o in ref_opts:
            o.step()
    names = {id(p): n for n, p in ours.named_parameters()}
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(p.detach(), q.detach()), names[id(p)]
    assert opt.state[ours.emb.weight]["exp_avg"].abs().sum() > 0


def test_hybrid_state_dict_resumes_bit_identically_and_schedulers_work():
    torch.manual_seed(1)
    a = Net()
    b = copy.deepcopy(a)

    def make(model):
        hidden, rest = split(model)
        opt = ModularSGD([{"params": hidden}, {"params": rest, "algorithm": "adamw", "lr": 1e-2}], lr=0.05)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train(model, opt, sched, steps):
        for step in steps:
            opt.zero_grad()
            loss_of(model, step).backward()
            opt.step()
            sched.step()

    train(a, *make(a), range(6))  # uninterrupted
    opt_b, sched_b = make(b)
    train(b, opt_b, sched_b, range(3))
    saved = copy.deepcopy((opt_b.state_dict(), sched_b.state_dict()))
    opt_c, sched_c = make(b)  # resumed from the saved state
    opt_c.load_state_dict(saved[0])
    sched_c.load_state_dict(saved[1])
    train(b, opt_c, sched_c, range(3, 6))
    assert [g["lr"] for g in opt_c.param_groups] == [0.05 * 0.125, 1e-2 * 0.125]
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.detach(), q.detach())


def test_adamw_group_refuses_bad_settings_and_nan_before_writing():
    model = Net()
    dualtype.typed(model)  # names come from the model's table
    hidden, rest = split(model)
    with pytest.raises(ConfigError, match="own lr"):
        ModularSGD([{"params": rest, "algorithm": "adamw"}])
    with pytest.raises(ConfigError, match="betas"):
        ModularSGD([{"params": rest, "algorithm": "adamw", "lr": 1e-3, "betas": (0.9, 1.0)}])
    with pytest.raises(ConfigError, match="algorithm"):
        ModularSGD([{"params": rest, "algorithm": "lion", "lr": 1e-3}])
    opt = ModularSGD([{"params": hidden}, {"params": rest, "algorithm": "adamw", "lr": 1e-3}])
    loss_of(model, 0).backward()
    model.norm.weight.grad[0] = float("nan")
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match="norm.weight"):
        opt.step()
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert not opt.state  # no moment was created either


def test_sparse_embeddings_are_refused_at_construction_with_a_way_out():
    model = nn.Sequential(nn.Embedding(5, 4, sparse=True), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="sparse=False.*SparseAdam"):
        ModularSGD(model)
    emb = nn.Embedding(5, 4, sparse=True)
    opt = ModularSGD([emb.weight])  # bare tensors: known only when the gradient comes
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ConfigError, match="sparse"):
        opt.step()


def test_no_decay_by_role_makes_a_second_group():
    model = Net()
    x, _ = batch(0)
    opt = ModularSGD(model, weight_decay=0.1, no_decay=["gain", "bias", "embedding"], example=x)
    decayed, exempt = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    assert set(decayed["names"]) == {"hidden.weight", "head.weight"}
    assert set(exempt["names"]) == {"emb.weight", "hidden.bias", "norm.weight", "norm.bias"}
    with pytest.raises(ConfigError, match="no_decay"):
        ModularSGD(model, no_decay=["nothing*"])


# --- ModularSGD.load_state_dict checks everything before replacing anything (issue 13) ------

def _trained():
    torch.manual_seed(3)
    model = Net()
    opt = ModularSGD(model)
    loss_of(model, 0).backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("damage, error, match", [
    (lambda sd: sd["param_groups"][0].update(lr=float("nan")), ConfigError, "lr"),
    (lambda sd: sd["param_groups"][0].update(momentum=2.0), ConfigError, "momentum"),
    (lambda sd: sd["param_groups"][0]["norms"].__setitem__(0, "bogus"), ConfigError, "bogus"),
    (lambda sd: [g.pop("names") for g in sd["param_groups"]], ConfigError, "torch.optim"),
    (lambda sd: sd["param_groups"][0]["names"].__setitem__(0, "other.weight"), ConfigError, "different model"),
    (lambda sd: sd["state"][1].__setitem__("momentum_buffer", torch.zeros(3, 3)), dualtype.ShapeError, "shape"),
    (lambda sd: sd["state"][1]["momentum_buffer"].fill_(float("nan")), NonFiniteError, "damaged"),
])
def test_bad_state_dicts_are_refused_before_anything_changes(damage, error, match):
    model, opt = _trained()
    saved = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(saved)
    damage(bad)
    with pytest.raises(error, match=match):
        opt.load_state_dict(bad)
    now = opt.state_dict()
    assert now["param_groups"] == saved["param_groups"]
    for k, v in saved["state"].items():
        assert torch.equal(now["state"][k]["momentum_buffer"], v["momentum_buffer"])


def test_a_torch_sgd_state_dict_is_refused():
    model, opt = _trained()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="not a ModularSGD state_dict"):
        opt.load_state_dict(sgd.state_dict())


def test_settings_changed_after_construction_are_checked_at_step():
    model, opt = _trained()
    opt.param_groups[0]["momentum"] = 1.5
    loss_of(model, 1).backward()
    with pytest.raises(ConfigError, match="momentum"):
        opt.step()


def test_adamw_group_does_not_inherit_the_matrices_weight_decay():
    """The default decay is for hidden matrices; an AdamW group (embeddings, head, gains in the
    usual hybrid) decays only with a weight_decay of its own."""
    model = Net()
    dualtype.typed(model)
    hidden, rest = split(model)
    opt = ModularSGD([{"params": hidden}, {"params": rest[1:], "algorithm": "adamw", "lr": 3e-3},
                      {"params": rest[:1], "algorithm": "adamw", "lr": 3e-3, "weight_decay": 0.1}])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.1]
