"""Helpers shared by the runtime tests: copies of values without tags, snapshots of weights,
and the check that a refused update is never a ``TypeError`` (docs/design.md §4)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch._C import DisableTorchFunctionSubclass

from dualtype import DualityError


def plain(t: torch.Tensor) -> torch.Tensor:
    """A plain copy of ``t`` (dense or sparse): tag, graph and shared storage dropped."""
    with DisableTorchFunctionSubclass():
        return t.detach().clone()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """name → plain copy of every parameter."""
    return {n: plain(p) for n, p in model.named_parameters()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Every parameter still equals its :func:`snapshot`."""
    for n, p in model.named_parameters():
        assert torch.equal(plain(p), before[n]), f"{n} changed by a refused update"


def not_type_error(info: pytest.ExceptionInfo) -> None:
    """A TypeError raised in an operator would become NotImplemented (the operator trap)."""
    assert not isinstance(info.value, TypeError), "a TypeError becomes NotImplemented in operators"


@contextlib.contextmanager
def refused(exc: type[Exception] = DualityError, match: str | None = None):
    """``pytest.raises`` that also insists the error is not a TypeError."""
    with pytest.raises(exc, match=match) as info:
        yield info
    not_type_error(info)
