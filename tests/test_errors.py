"""The error hierarchy: one root, type violations apart from bad values and bad settings."""

from __future__ import annotations

import pytest
import torch

import dualtype
from dualtype.errors import ConfigError, DualityError, DualtypeError, NonFiniteError, NormMismatchError, ShapeError
from dualtype.kernels import optimal_quintic, orthogonalize
from dualtype.distributed.plan import assign


@pytest.mark.parametrize("cls, parents", [
    (DualityError, (DualtypeError,)),
    (NormMismatchError, (DualityError, DualtypeError)),
    (ShapeError, (DualtypeError, ValueError)),
    (NonFiniteError, (DualtypeError, ValueError)),
    (ConfigError, (DualtypeError, ValueError)),
])
def test_each_error_has_its_place(cls, parents):
    for parent in parents:
        assert issubclass(cls, parent)
    assert not issubclass(cls, TypeError), "a TypeError turns into NotImplemented in operators"


@pytest.mark.parametrize("cls", [ShapeError, NonFiniteError, ConfigError])
def test_bad_values_and_settings_are_not_type_violations(cls):
    assert not issubclass(cls, DualityError)


def test_the_top_level_package_exports_the_whole_hierarchy():
    for cls in (DualtypeError, DualityError, NormMismatchError, ShapeError, NonFiniteError, ConfigError):
        assert getattr(dualtype, cls.__name__) is cls
        assert cls.__name__ in dualtype.__all__


def test_except_duality_error_does_not_catch_a_bad_setting():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(ConfigError) as info:
        try:
            dualtype.ModularSGD(model, lr=-1)
        except DualityError:  # pragma: no cover - the point of the test
            pytest.fail("a negative lr is a ConfigError, not a DualityError")
    assert isinstance(info.value, DualtypeError)


def test_a_norm_mismatch_in_the_optimizer_is_a_norm_mismatch_error():
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = dualtype.ModularSGD([("w", p)], norms={"w": "rms->rms"})
    p.grad = dualtype.dual(torch.randn(4, 3), "l2", name="w")
    with pytest.raises(NormMismatchError, match="'w' is Dual\\[l2\\]"):
        opt.step()


@pytest.mark.parametrize("call", [
    lambda: orthogonalize([[1.0, 0.0], [0.0, 1.0]]),
    lambda: dualtype.dualize(3.0, "l2"),
    lambda: dualtype.assume_primal([1.0], "l2", reason="test"),
    lambda: dualtype.norms.get("rms->rms").value("not a tensor"),
])
def test_a_value_that_is_not_a_tensor_is_a_config_error(call):
    with pytest.raises(ConfigError, match="torch.Tensor"):
        call()


@pytest.mark.parametrize("call", [
    lambda: optimal_quintic(0.5, 0.1),
    lambda: assign([1.0], 0),
])
def test_the_kernels_and_the_planner_raise_dualtypes_errors(call):
    with pytest.raises(ConfigError):
        call()
