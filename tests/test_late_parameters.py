"""Issue 13 items 3 and 4: parameters that appear after ``typed()`` (assigned, registered,
loaded with ``assign=True``, in a submodule added later) and parameters frozen when
``typed()`` ran and unfrozen later get Dual gradients like the others."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import dualtype
from dualtype import DualityError, DualTensor, norm_of
from dualtype import norms as N


def _backward(model, x=None):
    model.zero_grad(set_to_none=True)
    model(torch.randn(2, 4) if x is None else x).sum().backward()


def _refused(p):
    """A raw update of ``p`` with its own gradient raises and leaves it unchanged."""
    before = p.detach().clone()
    with torch.no_grad(), pytest.raises(DualityError):
        p.data.sub_(0.1 * p.grad)  # noqa: DTL002 - the raw update under test
    assert torch.equal(p.detach(), before)


def test_assigned_parameter_gets_the_norm_of_the_one_it_replaces():
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    dualtype.typed(m, example=torch.randn(2, 4))
    m[2].weight = nn.Parameter(torch.randn(3, 4))
    _backward(m)
    assert isinstance(m[2].weight.grad, DualTensor)
    assert norm_of(m[2].weight.grad) == N.RMSToLInf()  # still the output layer
    _refused(m[2].weight)


def test_register_parameter_under_a_typed_model():
    m = nn.Sequential(nn.Linear(4, 4))
    dualtype.typed(m)
    m[0].register_parameter("scale", nn.Parameter(torch.ones(4)))
    m[0].scale.sum().backward()
    assert isinstance(m[0].scale.grad, DualTensor)
    assert dualtype.typed_model.typed_handle(m).norms["0.scale"] == N.RMS()
    _refused(m[0].scale)


def test_submodule_added_after_typed():
    m = nn.Sequential(nn.Linear(4, 4))
    h = dualtype.typed(m)
    m.append(nn.Linear(4, 2))
    assert "1.weight" in h.norms and "1.bias" in h.norms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _backward(m)
    assert isinstance(m[1].weight.grad, DualTensor)
    _refused(m[1].weight)
    m[1].register_parameter("extra", nn.Parameter(torch.ones(2)))  # deeper, later still
    assert "1.extra" in h.norms


def test_load_state_dict_assign():
    src = nn.Linear(4, 3)
    with torch.device("meta"):
        m = nn.Linear(4, 3)
    dualtype.typed(m)
    m.load_state_dict(src.state_dict(), assign=True)
    assert m.weight.device.type == "cpu"
    _backward(m)
    assert isinstance(m.weight.grad, DualTensor) and isinstance(m.bias.grad, DualTensor)
    _refused(m.weight)


def test_load_state_dict_assign_of_gradients_is_refused_whole():
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    _backward(m)
    state = {"weight": m.weight.grad, "bias": m.bias.grad}
    before = m.weight.detach().clone()
    with pytest.raises(DualityError, match="nothing was loaded"):
        m.load_state_dict(state, assign=True)
    assert torch.equal(m.weight.detach(), before)


def test_replaced_parameter_is_released():
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    old = m.weight
    m.weight = nn.Parameter(torch.randn(3, 4))
    assert not old._post_accumulate_grad_hooks  # its hook went with it
    old.grad = torch.randn(3, 4)
    with torch.no_grad():
        old.sub_(0.1 * old.grad)  # noqa: DTL002 - outside the model it is no weight: plain math


def test_untyped_model_does_not_adopt():
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    dualtype.untyped(m)
    m.weight = nn.Parameter(torch.randn(3, 4))
    _backward(m)
    assert type(m.weight.grad) is torch.Tensor


def test_excluded_name_stays_plain_when_replaced():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    dualtype.typed(m, exclude=["1.weight"])
    m[1].weight = nn.Parameter(torch.randn(3, 4))
    _backward(m)
    assert type(m[1].weight.grad) is torch.Tensor and isinstance(m[0].weight.grad, DualTensor)


def test_unfrozen_parameter_gets_dual_gradients():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    m[0].weight.requires_grad_(False)
    dualtype.typed(m)
    _backward(m)
    assert m[0].weight.grad is None
    m[0].weight.requires_grad_(True)  # unfreeze for fine-tuning
    _backward(m)
    assert isinstance(m[0].weight.grad, DualTensor)
    assert norm_of(m[0].weight.grad) == dualtype.typed_model.typed_handle(m).norms["0.weight"]
    _refused(m[0].weight)


def test_unfrozen_after_deepcopy():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    m[0].weight.requires_grad_(False)
    dualtype.typed(m)
    c = copy.deepcopy(m)
    c[0].weight.requires_grad_(True)
    _backward(c)
    assert isinstance(c[0].weight.grad, DualTensor)


def test_no_forward_hook_without_frozen_parameters():
    m = nn.Sequential(nn.Linear(4, 4))
    dualtype.typed(m, example=torch.randn(1, 4))
    assert not m._forward_pre_hooks  # the forward stays free
