"""Every torch.optim optimizer on a typed model is refused before it writes anything: weights
and optimizer state are bit-identical after the error, and the message names the way out."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import dualtype

OPTIMIZERS = sorted(
    (name for name, cls in vars(torch.optim).items()
     if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
     and name not in ("SparseAdam", "LBFGS")),  # SparseAdam wants sparse grads; LBFGS a closure (below)
)


def kwargs_for(name: str, foreach: bool, weight_decay: float) -> dict:
    params = inspect.signature(getattr(torch.optim, name)).parameters
    kw: dict = {"lr": 1e-2}
    if "foreach" in params:
        kw["foreach"] = foreach
    if "weight_decay" in params:
        kw["weight_decay"] = weight_decay
    if "momentum" in params and name in ("SGD", "RMSprop"):
        kw["momentum"] = 0.9
    return kw


def state_of(opt):
    return copy.deepcopy({k: v for k, v in opt.state_dict()["state"].items()})


def same_state(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if a[k].keys() != b[k].keys():
            return False
        for key, x in a[k].items():
            y = b[k][key]
            if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
                return False
            if isinstance(x, torch.Tensor) and not torch.equal(x, y):
                return False
            if not isinstance(x, torch.Tensor) and x != y:
                return False
    return True


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_optimizer_is_refused_before_writing(name, foreach, weight_decay):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    dualtype.typed(model)
    params = [p for p in model.parameters() if p.ndim == 2] if name == "Muon" else list(model.parameters())
    opt = getattr(torch.optim, name)(params, **kwargs_for(name, foreach, weight_decay))
    model(torch.randn(3, 4)).sum().backward()
    weights = copy.deepcopy([p.detach().clone() for p in model.parameters()])
    state = state_of(opt)
    with pytest.raises(dualtype.DualityError, match="nothing was changed.*ModularSGD.*algorithm.*exclude"):
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(weights, model.parameters()))
    assert same_state(state_of(opt), state)


def test_lbfgs_is_refused_too():
    model = nn.Linear(4, 2)
    dualtype.typed(model)
    opt = torch.optim.LBFGS(model.parameters())
    x = torch.randn(3, 4)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        return loss

    model(x).pow(2).sum().backward()
    before = model.weight.detach().clone()
    with pytest.raises(dualtype.DualityError):
        opt.step(closure)
    assert torch.equal(before, model.weight.detach())


def test_excluded_parameters_train_with_torch_optimizers():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    dualtype.typed(model, exclude=["2.*"])
    opt = torch.optim.AdamW(model[2].parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    before = model[2].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model[2].weight.detach())


def test_module_load_state_dict_checks_every_entry_before_writing():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    dualtype.typed(model)
    model(torch.randn(3, 4)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    state = {k: v.detach().clone() + 1 for k, v in model.state_dict().items()}
    state["1.weight"] = model[1].weight.grad  # one gradient among weights: the last entry
    with pytest.raises(dualtype.DualityError, match=r"'1\.weight'.*nothing was loaded"):
        model.load_state_dict(state)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    state["1.weight"] = model[1].weight.detach().clone() + 1
    model.load_state_dict(state)  # plain weights load as usual
    assert torch.equal(model[0].weight.detach(), before[0] + 1)
