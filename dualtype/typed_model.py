"""``typed(model)``: every ``.grad`` of the model becomes ``Dual[norm of its parameter]``.

A post-accumulate-grad hook retags each gradient in place after backward (no copy, no
forward cost). The norms come from the model's table (:mod:`dualtype.roles`): declared by
name or glob, else inferred from the graph of the first forward, else (before that forward)
by layer type. The first forward after ``typed()`` is recorded once; if it changes a
parameter's norm (the head is found, a lookup table is recognised) the hooks retag with the
new norm from the first backward on. ``typed(model, example=x)`` records at once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook, register_module_parameter_registration_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dualtype.errors import ConfigError, DualityError
from dualtype.norms import Norm
from dualtype.roles import ROLE_NORMS, Table, types_of
from dualtype.trace import paused
from dualtype.tensor import DualTensor, norm_of, refresh_weight, register_weight, tag_gradient, unregister_weight

__all__ = ["typed", "untyped", "TypedModel", "typed_handle", "refuse_foreign_step"]

_ATTR = "_dualtype_typed"


class _TagGrad:
    """The hook: retag ``p.grad`` as ``Dual[norm]`` in place (picklable, no closure). It reads
    the entry, so a retyped parameter's next gradient carries the new norm."""

    __slots__ = ("entry", "storage")

    def __init__(self, entry: "_Entry") -> None:
        self.entry = entry
        self.storage = entry.param.untyped_storage().data_ptr()

    def __call__(self, param: torch.Tensor) -> None:
        ptr = param.untyped_storage().data_ptr()
        if ptr != self.storage:  # .double(), .to(device), share_memory(): re-key the weight
            self.storage = ptr
            refresh_weight(param)
        g = param.grad
        if g is not None:
            tag_gradient(g, self.entry.norm, self.entry.name)


@dataclass
class _Entry:
    name: str
    param: nn.Parameter
    norm: Norm
    hook: Any = None  # the grad hook's handle; None while the parameter is frozen


class TypedModel:
    """Handle returned by :func:`typed`: the per-parameter norms and the hooks.

    Follows the model's table (:mod:`dualtype.roles`): when it changes (the first forward was
    recorded, norms were declared) the hooks and the weight checks take the new norms and
    current gradients are retagged. Parameters that join the model later (assigned,
    ``register_parameter``, ``load_state_dict(assign=True)``, a submodule added) are typed
    when they are registered; a frozen parameter is hooked by the first forward after it is
    unfrozen (torch refuses grad hooks on frozen tensors). Survives ``copy.deepcopy(model)``
    and pickling of the whole model: the copy is typed too, with hooks on its own parameters.
    """

    def __init__(self, entries: list[_Entry], excluded: tuple[str, ...] = (), model: nn.Module | None = None) -> None:
        self.entries = entries
        self.excluded = excluded  # names left plain
        self.live = True
        self._model = weakref.ref(model) if model is not None else None
        self._hooks: list = []
        self._unfreeze = None
        for e in entries:
            self._install(e)
        if model is not None:
            self._hooks.append(model.register_load_state_dict_pre_hook(_RefuseDualState()))
            _join(model, self, "")

    def _install(self, e: _Entry) -> None:
        register_weight(e.param, e.name, e.norm)
        if e.param.requires_grad:
            e.hook = e.param.register_post_accumulate_grad_hook(_TagGrad(e))
        elif self._unfreeze is None and self._model is not None and self._model() is not None:
            self._unfreeze = self._model().register_forward_pre_hook(_Unfreeze(self))
        if e.param.grad is not None:  # a gradient from before: tag it too
            tag_gradient(e.param.grad, e.norm, e.name)

    def _release(self, e: _Entry) -> None:
        if e.hook is not None:
            e.hook.remove()
            e.hook = None
        unregister_weight(e.param, e.name)
        if isinstance(e.param.grad, DualTensor):
            e.param.grad.__class__ = torch.Tensor

    def adopt(self, name: str, module: nn.Module, pname: str, param: nn.Parameter) -> None:
        """Type ``param``, registered as ``name`` after :func:`typed` ran (it replaces the
        entry of that name, if any)."""
        model = self._model() if self._model is not None else None
        if model is None or not self.live:
            return
        norm = types_of(model).adopt(name, module, pname, param)
        old = next((e for e in self.entries if e.name == name), None)
        if old is not None:
            if old.param is param:
                return
            self._release(old)
            self.entries.remove(old)
        if norm is not None:
            self.entries.append(_Entry(name, param, norm))
            self._install(self.entries[-1])

    def _update(self, table: Table) -> None:
        for e in self.entries:
            norm = table[e.name].norm if e.name in table else e.norm
            if norm != e.norm:
                e.norm = norm
                unregister_weight(e.param, e.name)
                register_weight(e.param, e.name, norm)
                if isinstance(e.param.grad, DualTensor):
                    tag_gradient(e.param.grad, norm, e.name)

    @property
    def norms(self) -> dict[str, Norm]:
        """Parameter name → norm."""
        return {e.name: e.norm for e in self.entries}

    def remove(self) -> None:
        """Remove the hooks and untag current gradients."""
        self.live = False
        for h in [*self._hooks, self._unfreeze]:
            if h is not None:
                h.remove()
        self._hooks.clear()
        self._unfreeze = None
        for e in self.entries:
            self._release(e)

    def __deepcopy__(self, memo: dict) -> "TypedModel":
        import copy

        return TypedModel([_Entry(e.name, copy.deepcopy(e.param, memo), e.norm) for e in self.entries], self.excluded)

    def __getstate__(self) -> dict:
        return {"entries": [(e.name, e.param, e.norm) for e in self.entries], "excluded": self.excluded}

    def __setstate__(self, state: dict) -> None:
        self.__init__([_Entry(*t) for t in state["entries"]], state.get("excluded", ()))

    def __repr__(self) -> str:
        width = max((len(n) for n in [*(e.name for e in self.entries), *self.excluded]), default=4)
        rows = [f"  {e.name:<{width}}  {str(tuple(e.param.shape)):<16} {e.norm}" for e in self.entries]
        rows += [f"  {n:<{width}}  {'':<16} excluded (plain)" for n in self.excluded]
        return "TypedModel(\n" + "\n".join(rows) + "\n)"


def typed(model: nn.Module, norms: Mapping[str, "str | Norm"] | None = None, *,
          exclude: "str | list[str] | None" = None, example: Any = None, strict: bool = True) -> TypedModel:
    """Make every ``.grad`` of ``model`` a ``Dual[norm of its parameter]`` after backward.

    ``norms`` declares norms by exact name or ``fnmatch`` glob (first match in dict order,
    exact names first); everything else comes from the model's graph, recorded on its first
    forward (or now, on ``example``: a tensor or a tuple of positional inputs). A declared
    norm that contradicts the graph raises :class:`~dualtype.errors.NormMismatchError`
    (``strict=False``: a warning). ``exclude`` (names, globs or roles such as
    ``"embedding"``) leaves those parameters plain, for another optimizer. Calling it again
    re-types the model with the new norms.
    Undo with :func:`untyped` or ``handle.remove()``. Raises :class:`ConfigError` for a
    pattern that matches no parameter.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"typed() takes an nn.Module, got {type(model).__name__}")
    with paused():  # typed() inside another model's recorded forward is bookkeeping
        return _typed(model, norms, exclude, example, strict)


def _typed(model: nn.Module, norms, exclude, example, strict: bool) -> TypedModel:
    types = types_of(model)
    types.declare(norms=norms, exclude=exclude, strict=strict, replace=True)
    if example is not None:
        types.observe(*(example if isinstance(example, tuple) else (example,)))
    if any(x in ROLE_NORMS for x in types.exclude) and types.graph is None and not getattr(model, "exact_structure", False):
        raise ConfigError(f"exclude={types.exclude} names a role, and roles come from the model's graph: "
                          "pass an example input, typed(model, exclude=..., example=x), or exclude by name")
    table = types.table
    old = model.__dict__.get(_ATTR)
    if old is not None:
        types.unlisten(old._update)
        old.remove()
    params = dict(model.named_parameters())
    handle = TypedModel([_Entry(r.name, params[r.name], r.norm) for r in table if not r.excluded],
                        tuple(r.name for r in table if r.excluded), model)
    types.listen(handle._update)
    types.watch()
    _install_step_guard()
    object.__setattr__(model, _ATTR, handle)
    return handle


class _Unfreeze:
    """Forward pre-hook of a model with frozen typed parameters: hook those unfrozen since
    (one ``requires_grad`` read per frozen parameter and forward; removed when none is left)."""

    def __init__(self, handle: TypedModel) -> None:
        self.handle = handle

    def __call__(self, module, args) -> None:
        h = self.handle
        if not h.live:
            return
        for e in h.entries:
            if e.hook is None and e.param.requires_grad:
                e.hook = e.param.register_post_accumulate_grad_hook(_TagGrad(e))


# module → (handle, name prefix) of each typed model containing it: a parameter registered on
# it later, or a submodule added to it, joins that model (torch's global registration hooks)
_MEMBERS: "weakref.WeakKeyDictionary[nn.Module, list[tuple[weakref.ref, str]]]" = weakref.WeakKeyDictionary()
_REGISTRATION: list = []


def _join(module: nn.Module, handle: TypedModel, prefix: str) -> None:
    ref = weakref.ref(handle)
    for name, m in module.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False):
        _MEMBERS.setdefault(m, []).append((ref, name + "." if name else ""))
    if not _REGISTRATION:
        _REGISTRATION.append(register_module_parameter_registration_hook(_on_parameter))
        _REGISTRATION.append(register_module_module_registration_hook(_on_module))


def _handles(module: nn.Module):
    for ref, prefix in _MEMBERS.get(module, ()):
        handle = ref()
        if handle is not None and handle.live:
            yield handle, prefix


def _on_parameter(module: nn.Module, name: str, param: nn.Parameter) -> None:
    for handle, prefix in list(_handles(module)):
        handle.adopt(prefix + name, module, name, param)


def _on_module(parent: nn.Module, name: str, sub: nn.Module | None) -> None:
    if sub is None:
        return
    for handle, prefix in list(_handles(parent)):
        _join(sub, handle, prefix + name + ".")
        for mname, m in sub.named_modules(prefix=prefix + name):
            for pname, p in m.named_parameters(recurse=False):
                handle.adopt(f"{mname}.{pname}", m, pname, p)


class _RefuseDualState:
    """load_state_dict pre-hook of a typed model: every entry is checked before any is
    written, and a gradient (Dual) offered as a weight refuses the whole load."""

    def __call__(self, module, state_dict, prefix, *rest) -> None:
        bad = [k for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, DualTensor)]
        if bad:
            raise DualityError(
                f"load_state_dict: {', '.join(repr(k) for k in bad[:5])}{' …' if len(bad) > 5 else ''} "
                f"hold gradients (Dual), not weights; nothing was loaded. Save p.detach(), not p.grad, "
                "or pass dualtype.dualize(...) updates through an optimizer step")


def refuse_foreign_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """Global optimizer step pre-hook: a ``torch.optim`` optimizer stepping a parameter whose
    gradient is Dual would apply it raw; refuse before it writes anything (weights and its
    state stay bit-identical). One ``isinstance`` per parameter and step."""
    if not type(optimizer).__module__.startswith("torch.optim"):
        return  # dualtype's own optimizers, and user code that dualizes through the door
    for group in optimizer.param_groups:
        for p in group["params"]:
            g = p.grad
            if isinstance(g, DualTensor):
                name = g.param_name or "a parameter"
                raise DualityError(
                    f"{type(optimizer).__name__} would step '{name}' with its raw gradient "
                    f"(Dual[{norm_of(g)}]); nothing was changed. Ways out: (1) dualtype.ModularSGD(model); "
                    f"(2) keep {type(optimizer).__name__}'s part in a hybrid group: ModularSGD([{{'params': "
                    f"hidden}}, {{'params': rest, 'algorithm': 'adamw', 'lr': 3e-3}}]); (3) leave these "
                    f"parameters plain: dualtype.typed(model, exclude=['{name}']) or dualtype.untyped(model)")


_PRE_HOOK: list = []


def _install_step_guard() -> None:
    if not _PRE_HOOK:
        _PRE_HOOK.append(register_optimizer_step_pre_hook(refuse_foreign_step))


def typed_handle(model: nn.Module) -> TypedModel | None:
    """The :class:`TypedModel` of ``model`` if it is typed, else None."""
    return model.__dict__.get(_ATTR)


def untyped(model: nn.Module) -> nn.Module:
    """Undo :func:`typed`: remove the hooks and make current gradients plain again."""
    handle = model.__dict__.pop(_ATTR, None)
    if handle is not None:
        handle.remove()
        if "_dualtype_types" in model.__dict__:
            types_of(model).unlisten(handle._update)
    return model
