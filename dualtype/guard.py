"""``typed(model)``: every ``.grad`` of the model becomes ``Dual[norm of its parameter]``.

A post-accumulate-grad hook retags each gradient in place after backward (no copy, no
forward cost). Default norms by layer type (DESIGN §3):

==========================  ============
parameter                   norm
==========================  ============
``nn.Linear.weight``        ``rms->rms``
``nn.Embedding.weight``     ``l1->rms``
``nn.Conv2d.weight``        ``conv2d``
any 0-D or 1-D parameter    ``rms``
other 2-D parameters        ``rms->rms``
==========================  ============

``norms`` overrides by exact name or ``fnmatch`` glob (``"head.weight": "rms->linf"``,
``"*.bias": "l2"``); the first matching pattern in dict order wins, exact names first.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from dualtype import norms as _norms
from dualtype.errors import ConfigError
from dualtype.norms import Norm
from dualtype.tensor import DualTensor, _tag, register_weight, unregister_weight

__all__ = ["typed", "untyped", "TypedModel", "default_norm"]

_ATTR = "_dualtype_typed"


def default_norm(module: nn.Module, pname: str, param: torch.Tensor) -> Norm | None:
    """The norm DESIGN §3 assigns to ``module``'s own parameter ``pname`` (None: unknown)."""
    if pname == "weight" and isinstance(module, nn.Embedding):
        return _norms.L1ToRMS()
    if pname == "weight" and isinstance(module, nn.Conv2d):
        return _norms.Conv2D()
    if param.ndim <= 1:
        return _norms.RMS()
    if param.ndim == 2:
        return _norms.RMSToRMS()
    return None


def _override(name: str, overrides: Mapping[str, "str | Norm"]) -> Norm | None:
    if name in overrides:
        return _norms.get(overrides[name])
    for pattern, spec in overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return _norms.get(spec)
    return None


class _TagGrad:
    """The hook: retag ``p.grad`` as ``Dual[norm]`` in place (picklable, no closure)."""

    __slots__ = ("norm", "name")

    def __init__(self, norm: Norm, name: str) -> None:
        self.norm, self.name = norm, name

    def __call__(self, param: torch.Tensor) -> None:
        g = param.grad
        if g is not None:
            _tag(g, "dual", self.norm, self.name)


@dataclass
class _Entry:
    name: str
    param: nn.Parameter
    norm: Norm


class TypedModel:
    """Handle returned by :func:`typed`: the per-parameter norms and the hooks.

    Survives ``copy.deepcopy(model)`` and pickling of the whole model: the copy is typed
    too, with hooks on its own parameters.
    """

    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries
        self._hooks: list = []
        self._install()

    def _install(self) -> None:
        for e in self.entries:
            register_weight(e.param, e.name, e.norm)
            if e.param.requires_grad:
                self._hooks.append(e.param.register_post_accumulate_grad_hook(_TagGrad(e.norm, e.name)))

    @property
    def norms(self) -> dict[str, Norm]:
        """Parameter name → norm."""
        return {e.name: e.norm for e in self.entries}

    def remove(self) -> None:
        """Remove the hooks and untag current gradients."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        for e in self.entries:
            unregister_weight(e.param)
            if isinstance(e.param.grad, DualTensor):
                e.param.grad.__class__ = torch.Tensor

    def __deepcopy__(self, memo: dict) -> "TypedModel":
        import copy

        return TypedModel([_Entry(e.name, copy.deepcopy(e.param, memo), e.norm) for e in self.entries])

    def __getstate__(self) -> dict:
        return {"entries": [(e.name, e.param, e.norm) for e in self.entries]}

    def __setstate__(self, state: dict) -> None:
        self.entries = [_Entry(*t) for t in state["entries"]]
        self._hooks = []
        self._install()

    def __repr__(self) -> str:
        width = max((len(e.name) for e in self.entries), default=4)
        rows = [f"  {e.name:<{width}}  {str(tuple(e.param.shape)):<16} {e.norm}" for e in self.entries]
        return "TypedModel(\n" + "\n".join(rows) + "\n)"


def typed(model: nn.Module, norms: Mapping[str, "str | Norm"] | None = None) -> TypedModel:
    """Make every ``.grad`` of ``model`` a ``Dual[norm of its parameter]`` after backward.

    Calling it again re-types the model with the new norms. Undo with :func:`untyped` or
    ``handle.remove()``. Raises :class:`ConfigError` for a parameter whose norm cannot be
    inferred (give it in ``norms``) or a pattern that matches no parameter.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"typed() takes an nn.Module, got {type(model).__name__}")
    overrides = dict(norms or {})
    untyped(model)
    entries: list[_Entry] = []
    used: set[str] = set()
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # a tied weight: one entry, one hook, under its first name
                continue           # (as model.named_parameters() lists it)
            seen.add(id(param))
            name = f"{mname}.{pname}" if mname else pname
            norm = _override(name, overrides)
            if norm is not None:
                used.update(k for k in overrides if k == name or fnmatch.fnmatchcase(name, k))
            else:
                norm = default_norm(module, pname, param)
            if norm is None:
                raise ConfigError(
                    f"cannot infer a norm for parameter '{name}' of shape {tuple(param.shape)} "
                    f"in {type(module).__name__}; pass one, e.g. "
                    f"dualtype.typed(model, norms={{'{name}': 'l2'}}) (known: {', '.join(_norms.names())})"
                )
            norm.check(param, f"parameter '{name}'")
            entries.append(_Entry(name, param, norm))
    unused = set(overrides) - used
    if unused:
        raise ConfigError(
            f"norms given for {sorted(unused)} match no parameter of {type(model).__name__}; "
            f"parameters are: {', '.join(e.name for e in entries)}"
        )
    handle = TypedModel(entries)
    object.__setattr__(model, _ATTR, handle)
    return handle


def untyped(model: nn.Module) -> nn.Module:
    """Undo :func:`typed`: remove the hooks and make current gradients plain again."""
    handle = model.__dict__.get(_ATTR)
    if handle is not None:
        handle.remove()
        del model.__dict__[_ATTR]
    return model
