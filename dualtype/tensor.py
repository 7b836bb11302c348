"""Typed tensors: a role (dual or primal) and a norm tag, with the type rules of docs/design.md §4.

A gradient is ``Dual[N]``: a dual vector under the norm ``N`` of its parameter. The only way
from dual to primal is :func:`dualize`, which returns ``Primal[N]``. Weights and activations
stay plain tensors, so the forward pass pays nothing.

The rules, enforced in ``__torch_function__``:

- ``c·Dual[N] → Dual[N]``; ``Dual[N] ± Dual[N] → Dual[N]``; clone, detach, to, view,
  indexing, stack, ``zeros_like`` ... keep the tag (momentum buffers stay Dual). Any other
  function of a dual value stays dual, with the norm dropped when inputs disagree. Reductions
  to a number (``g.norm()``, ``g.sum()``) and comparisons give plain tensors; a partial
  reduction (``g.mean(0)``) stays dual with an unknown norm.
- The pairing ⟨g, d⟩ of a Dual and a Primal is allowed: ``(g * d).sum()``, ``torch.dot``,
  ``vdot``, ``inner``, ``g.flatten() @ d.flatten()`` give a plain number; the density ``g * d``
  is ``Dual[?]`` (never an update); comparisons (``==``, ``allclose``, ``isclose``) are plain.
- ``Dual[N] ± Dual[M]`` with N ≠ M → :class:`NormMismatchError`; any other mix of Dual and
  Primal → :class:`DualityError`; a Dual added to a weight (out of place, e.g. ``p.data - lr * g``
  or coupled weight decay ``g + wd * p``) → :class:`DualityError`.
- Writing a Dual into a weight by any in-place form (``-=``, ``sub_``, ``add_(g, alpha=-lr)``,
  ``_foreach_add_``, ``copy_``, ``addcdiv_``, ``out=``, ``p[...] = g``) → :class:`DualityError`
  naming the parameter, its norm and the fix. Writing ``Primal[M]`` into a weight whose norm is
  ``N ≠ M`` → :class:`NormMismatchError`. Writing a Dual into a plain non-weight buffer makes
  the buffer Dual (so Adam-style moments built in ``zeros_like(p)`` cannot sneak back).
- ``Primal ± weight`` gives a plain tensor: the new weight value.

The same rules hold for aten overloads (``torch.ops.aten.sub_.Tensor``: named by their
schema), under dispatch modes (``torch.compile(backend="aot_eager")``), for the sparse
constructors and ``vector_to_parameters``, which bypass ``__torch_function__`` and are wrapped
at import (see the end of this module).

A *weight* is an ``nn.Parameter``, a leaf tensor that requires grad, or any tensor sharing
storage with a parameter of a model passed to :func:`dualtype.typed` (this covers ``p.data``).
None of the errors is a ``TypeError``: PyTorch would turn it into ``NotImplemented`` inside
Python operators and the update would silently fall back (docs/design.md §4, "a trap").
"""

from __future__ import annotations

import copy
import functools
import math
import weakref
from typing import Any, Iterable

import torch
from torch import Tensor
from torch._C import DisableTorchFunctionSubclass

from dualtype import norms as _norms
from dualtype.errors import ConfigError, DualityError, NonFiniteError, NormMismatchError
from dualtype.norms import Norm

__all__ = [
    "TypedTensor",
    "DualTensor",
    "PrimalTensor",
    "dual",
    "dualize",
    "assume_primal",
    "role",
    "norm_of",
    "plain",
    "register_weight",
    "unregister_weight",
    "refresh_weight",
    "weight_info",
    "tag_gradient",
]

# --- weights -----------------------------------------------------------------------------

# storage data pointer -> registrations (byte range start, stop, weakref to the storage,
# id of the parameter, name, norm), newest last; filled by dualtype.typed. One storage may
# hold several weights (flat views), and one weight may be registered by several typed()
# calls (a model and its submodule): a write is matched to the newest registration whose
# bytes it touches. The weak reference is to the storage, not the parameter: a weakref to
# a tensor makes torch.utils.swap_tensors (swap-on-conversion, assign loads) refuse it, and
# a live storage also guarantees its address is not reused by another tensor.
_Entry = tuple[int, int, weakref.ref, int, str, "Norm | None"]
_WEIGHTS: dict[int, list[_Entry]] = {}


def _span(t: Tensor) -> tuple[int, int]:
    """The bytes [start, stop) of ``t``'s storage that ``t`` can reach (empty if numel is 0)."""
    if t.numel() == 0:
        return 0, 0
    reach = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    start = t.storage_offset() * t.element_size()
    return start, start + reach * t.element_size()


def _registrable(t: Tensor) -> bool:
    return t.layout == torch.strided and t.device.type != "meta"


def register_weight(param: Tensor, name: str, norm: Norm | None) -> None:
    """Declare ``param`` a weight of norm ``norm`` so views of it (``p.data``) are guarded.

    Registrations stack: registering a parameter again (by a second ``typed()``) adds one,
    and :func:`unregister_weight` removes only the newest, so the first stays in force."""
    if not _registrable(param):
        return
    storage = param.untyped_storage()
    key = storage.data_ptr()
    live = [e for e in _WEIGHTS.get(key, []) if e[2]() is not None]
    _WEIGHTS[key] = [*live, (*_span(param), weakref.ref(storage), id(param), name, norm)]


def unregister_weight(param: Tensor, name: str | None = None) -> None:
    """Remove the newest registration of ``param`` (of that ``name``, if given)."""
    if not _registrable(param):
        return
    key = param.untyped_storage().data_ptr()
    entries = _WEIGHTS.get(key, [])
    for i in range(len(entries) - 1, -1, -1):
        if entries[i][3] == id(param) and (name is None or entries[i][4] == name):
            del entries[i]
            break
    if not entries:
        _WEIGHTS.pop(key, None)


def refresh_weight(param: Tensor) -> None:
    """Move ``param``'s registrations to the storage it lives in now.

    ``model.double()``, ``.to(device)``, ``share_memory()`` ... replace ``param.data``, so the
    registry would still point at the old storage and ``p.data`` writes would go unchecked.
    A caller that sees the storage change (dualtype.typed_model) calls this;
    it scans the registry, so it is meant for such events, not for every step."""
    moved: list[_Entry] = []
    for key in list(_WEIGHTS):
        keep = []
        for entry in _WEIGHTS[key]:
            (moved if entry[3] == id(param) else keep).append(entry)
        if keep:
            _WEIGHTS[key] = keep
        else:
            del _WEIGHTS[key]
    for *_, name, norm in moved:
        register_weight(param, name, norm)


def weight_info(t: Tensor) -> tuple[str | None, Norm | None] | None:
    """(name, norm) if ``t`` is a weight (see module doc), else None."""
    if _WEIGHTS and _registrable(t):  # sparse tensors have no storage
        storage = t.untyped_storage()
        entries = _WEIGHTS.get(storage.data_ptr())
        if entries:
            start, stop = _span(t)
            for lo, hi, ref, owner, name, norm in reversed(entries):
                # the parameter itself (even of size zero, e.g. an empty FSDP shard), or a view
                # that reaches its bytes
                if ref() is storage and (owner == id(t) or (lo < stop and start < hi)):
                    return name, norm
    if isinstance(t, torch.nn.Parameter) or (t.is_leaf and t.requires_grad):
        return None, None
    return None


# --- the typed tensor classes ------------------------------------------------------------

_DUAL, _PRIMAL = "dual", "primal"

# Functions whose result observes a value: plain tensors (or Python values) come out.
_OBSERVE = {
    "norm", "vector_norm", "matrix_norm", "svdvals", "dist", "sum", "mean", "nansum",
    "nanmean", "max", "min", "amax", "amin", "aminmax", "std", "var", "std_mean", "var_mean",
    "dot", "vdot", "inner", "count_nonzero", "all", "any", "eq", "ne", "lt", "le", "gt", "ge",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "isclose", "equal",
    "allclose", "isnan", "isinf", "isfinite", "isposinf", "isneginf", "signbit", "argmax",
    "argmin", "nonzero", "_foreach_norm", "_foreach_max", "item", "tolist", "numpy",
}
# Functions that add their tensor arguments (the ± of the algebra).
_ADDITIVE = {
    "add", "sub", "subtract", "rsub", "__add__", "__radd__", "__sub__", "__rsub__",
    "__iadd__", "__isub__", "lerp", "addcmul", "addcdiv", "where", "copy", "index_add",
    "scatter_add", "index_copy", "masked_scatter", "put", "__setitem__",
}
_PASSTHROUGH = {
    "__reduce_ex__", "__setstate__", "__format__", "__hash__", "__len__",
    "size", "dim", "numel", "stride", "storage_offset", "data_ptr", "untyped_storage",
    "is_contiguous", "element_size", "get_device", "is_floating_point", "is_complex",
    "__get__", "__set__", "register_hook", "register_post_accumulate_grad_hook",
    "requires_grad_", "retain_grad", "as_subclass",
}


# Mixing a dual and a primal value is allowed only where the result is the pairing ⟨g, d⟩
# (or its density g·d, which stays Dual[?] so it cannot be written into a weight) or a
# comparison (a plain bool).
_PAIRING = {"mul", "multiply", "__mul__", "__rmul__", "dot", "vdot", "inner", "matmul",
            "__matmul__", "__rmatmul__", "tensordot"}
_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__",
            "__gt__", "__ge__", "isclose", "equal", "allclose"}
_MIXABLE = _PAIRING | _COMPARE


def _func_name(func: Any) -> str:
    """The op's name: ``torch.ops.aten.sub_.Tensor`` (an OpOverload, whose ``__name__`` is
    ``"sub_.Tensor"``) is named by its schema, ``"sub_"``, like ``Tensor.sub_``."""
    if type(func) is torch._ops.OpOverload:
        return func._schema.name.rpartition("::")[2]
    return getattr(func, "__name__", "")


def _base_name(name: str) -> str:
    # torch.linalg.vector_norm is "linalg_vector_norm": match it as "vector_norm".
    name = name.removeprefix("linalg_")
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _run(func, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)`` below the typed layer. Under a dispatch mode (AOT autograd's
    first compiled call, say) the typed arguments are passed as plain aliases: such modes
    return NotImplemented for tensor subclasses they do not know, which surfaced as a
    TypeError (and, inside an operator, as a silent NotImplemented). Results that are those
    aliases (an in-place op returns ``self``) are mapped back to the typed originals."""
    with DisableTorchFunctionSubclass():
        if torch._C._len_torch_dispatch_stack() == 0 or torch.compiler.is_compiling():
            return func(*args, **kwargs)
        back: dict[int, Any] = {}
        pargs = _unwrap(args, back)
        pkwargs = {k: _unwrap(v, back) for k, v in kwargs.items()}
        ret = func(*pargs, **pkwargs)
    if isinstance(ret, Tensor):
        return back.get(id(ret), ret)
    if isinstance(ret, (list, tuple)) and not hasattr(ret, "_fields"):
        return type(ret)(back.get(id(r), r) for r in ret)
    return ret


def _unwrap(obj: Any, back: dict[int, Any]) -> Any:
    if isinstance(obj, TypedTensor):
        alias = _alias(obj)
        back[id(alias)] = obj
        return alias
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_unwrap(o, back) for o in obj)
    return obj


def _is_inplace(name: str) -> bool:
    return (name.endswith("_") and not name.endswith("__")) or name in (
        "__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__", "__setitem__",
    )


def _typed_in(obj: Any, out: list) -> None:
    if isinstance(obj, TypedTensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            if isinstance(item, TypedTensor):
                out.append(item)


def _describe(t: "TypedTensor") -> str:
    if not t._dt_name:
        return t.type_label
    what = "gradient of" if t._role == _DUAL else "update for"
    return f"{t.type_label} ({what} '{t._dt_name}')"


def _require_one_role(op: str, values: list["TypedTensor"]) -> None:
    if len({v._role for v in values}) > 1:
        raise DualityError(
            f"{op} mixes a dual and a primal value: {', '.join(_describe(v) for v in values)}. "
            "Dual (gradients) and primal (updates) live in different spaces; dualize the "
            "gradient before combining."
        )


def _fix_hint(name: str | None, norm: Norm | None) -> str:
    n = f"'{norm}'" if norm is not None else "its norm"
    return (
        "Map it to the primal space first: `p.sub_(lr * dualtype.dualize(p.grad))` "
        f"(dualize uses {n}). If this update deliberately leaves the algebra (e.g. Adam's "
        "m/sqrt(v)), say so: `dualtype.assume_primal(x, norm, reason=...)`."
    )


def _check_write(op: str, dest: Any, sources: list["TypedTensor"]) -> tuple[str, Norm | None, str | None] | None:
    """Check writing ``sources`` into ``dest``; return the tag dest must take, if any."""
    if not isinstance(dest, Tensor):
        return None
    _require_one_role(op, sources)
    if isinstance(dest, TypedTensor):
        for s in sources:
            if s._role != dest._role:
                raise DualityError(
                    f"{op} writes {_describe(s)} into {_describe(dest)}. Dual (gradients) "
                    "and primal (updates) live in different spaces; dualize the gradient first."
                )
            if s._dt_norm is not None and dest._dt_norm is not None and s._dt_norm != dest._dt_norm:
                raise NormMismatchError(
                    f"{op} writes {_describe(s)} into {_describe(dest)}: the norms differ. "
                    "Combine only values of the same parameter or norm."
                )
        return None
    if not sources:
        return None
    info = weight_info(dest)
    src = sources[0]
    if info is None:  # a plain buffer: it takes the tag of what is written into it
        return src._role, _common_norm(sources), src._dt_name
    wname, wnorm = info
    name = wname or src._dt_name
    label = f"weight '{name}'" if name else "a weight"
    if src._role == _DUAL:
        raise DualityError(
            f"{op} applies {_describe(src)} to {label}"
            + (f" of norm '{wnorm}'" if wnorm is not None else "")
            + ". A gradient is a dual vector and may not be subtracted from the weights. "
            + _fix_hint(name, wnorm or src._dt_norm)
        )
    for s in sources:
        if wnorm is not None and s._dt_norm is not None and s._dt_norm != wnorm:
            raise NormMismatchError(
                f"{op} applies {_describe(s)} to {label} of norm '{wnorm}'. "
                f"Dualize the gradient under '{wnorm}': `dualtype.dualize(g, '{wnorm}')`, or "
                "give the parameter the norm you meant in `dualtype.typed(model, norms=...)`."
            )
    return None


def _scaled_weight(t: Tensor) -> Tensor | None:
    """The weight ``t`` was computed from by a chain of one-input ops with autograd on
    (``wd * p``: coupled weight decay ``g + wd * p``), else None. Under ``no_grad`` there
    is no graph to follow, so only ``g.add(p, alpha=wd)`` is caught there."""
    fn = t.grad_fn
    for _ in range(4):
        if fn is None:
            return None
        var = getattr(fn, "variable", None)  # AccumulateGrad: the leaf itself
        if var is not None:
            return var if weight_info(var) is not None else None
        nxt = [f for f, _ in fn.next_functions if f is not None]
        fn = nxt[0] if len(nxt) == 1 else None
    return None


def _common_norm(sources: Iterable["TypedTensor"]) -> Norm | None:
    found = {s._dt_norm for s in sources}
    return found.pop() if len(found) == 1 else None


def _check_mix(op: str, typed: list["TypedTensor"], args: tuple, kwargs: dict) -> bool:
    """Check an out-of-place call; return True if the result is a plain new weight value."""
    if op not in _MIXABLE:
        _require_one_role(op, typed)
    roles = {t._role for t in typed}
    if op not in _ADDITIVE:
        return False
    norms_ = {t._dt_norm for t in typed} - {None}
    if len(norms_) > 1:
        raise NormMismatchError(
            f"{op} adds values of different norms: {', '.join(_describe(t) for t in typed)}. "
            "Only values of the same norm may be added."
        )
    weights = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)
               and not isinstance(a, TypedTensor) and weight_info(a) is not None]
    if not weights and _DUAL in roles:
        weights = [w for a in (*args, *kwargs.values()) if isinstance(a, Tensor)
                   and not isinstance(a, TypedTensor) and (w := _scaled_weight(a)) is not None]
    if not weights:
        return False
    if _DUAL in roles:
        src = typed[0]
        wname, wnorm = weight_info(weights[0])  # type: ignore[misc]
        name = wname or src._dt_name
        raise DualityError(
            f"{op} adds {_describe(src)} to weight '{name or '?'}' (out of place, e.g. "
            "`p.data = p.data - lr * g`, or coupled weight decay `g + wd * p`). A gradient is a "
            "dual vector and may not be combined with the weights. Use decoupled weight decay "
            "(`p.mul_(1 - lr * wd)`). " + _fix_hint(name, wnorm or src._dt_norm)
        )
    for w in weights:
        wname, wnorm = weight_info(w)  # type: ignore[misc]
        for t in typed:
            if wnorm is not None and t._dt_norm is not None and t._dt_norm != wnorm:
                raise NormMismatchError(
                    f"{op} adds {_describe(t)} to weight '{wname}' of norm '{wnorm}'. "
                    f"Dualize the gradient under '{wnorm}'."
                )
    return True


def _tag(t: Any, role: str, norm: Norm | None, name: str | None) -> Any:
    if isinstance(t, Tensor):
        cls = DualTensor if role == _DUAL else PrimalTensor
        if type(t) is not cls:
            t.__class__ = cls  # retag in place: the cheapest way (docs/design.md §4)
        d = t.__dict__
        d["_dt_norm"] = norm
        d["_dt_name"] = name
        return t
    if isinstance(t, (list, tuple)):
        items = [_tag(x, role, norm, name) for x in t]
        return type(t)(items) if not hasattr(t, "_fields") else type(t)(*items)
    return t


class TypedTensor(Tensor):
    """Base of :class:`DualTensor` and :class:`PrimalTensor` (``isinstance(t, TypedTensor)``:
    ``t`` carries a role); not constructed directly."""

    _role = ""
    _dt_norm: Norm | None = None  # instance attributes, set by _tag; defaults here
    _dt_name: str | None = None

    @property
    def param_name(self) -> str | None:
        """Name of the parameter this gradient or update belongs to, when known."""
        return self._dt_name

    def __class_getitem__(cls, norm: "str | Norm") -> type:
        """``Dual["rms->rms"]``: an annotation matching dual values of that norm (see typing)."""
        return _spec(cls, _norms.get(norm))

    @property
    def type_label(self) -> str:
        """``Dual[norm]`` or ``Primal[norm]`` (``?`` for an unknown norm), as errors print it."""
        n = self._dt_norm
        return f"{'Dual' if self._role == _DUAL else 'Primal'}[{n if n is not None else '?'}]"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _func_name(func)
        if name in _PASSTHROUGH:
            ret = _run(func, args, kwargs)
            if name == "__get__" and isinstance(ret, Tensor) and isinstance(args[0], TypedTensor):
                src = args[0]
                ret = _tag(ret, src._role, src._dt_norm, src._dt_name)
            return ret
        if name == "__repr__":
            return _repr(args[0])
        if name == "__deepcopy__":
            src, memo = args
            with DisableTorchFunctionSubclass():
                copied = _tag(_alias(src).clone(), src._role, src._dt_norm, src._dt_name)
            copied.__dict__.update(copy.deepcopy({k: v for k, v in src.__dict__.items()
                                                  if k.startswith("_dt_")}, memo))
            memo[id(src)] = copied
            return copied
        op = _base_name(name)
        # torch.optim's fused kernels (_fused_adam_, _fused_sgd_, ...) update params[i] from
        # grads[i] like an in-place _foreach op: check them the same way.
        if name.startswith("_foreach_") or (name.startswith("_fused_") and _is_inplace(name)):
            return _foreach(func, name, op, args, kwargs)

        typed: list[TypedTensor] = []
        for a in args:
            _typed_in(a, typed)
        for v in kwargs.values():
            _typed_in(v, typed)

        out = kwargs.get("out")
        if _is_inplace(name) or out is not None:
            dests = [args[0]] if out is None else (list(out) if isinstance(out, (list, tuple)) else [out])
            sources = [t for t in typed if not any(t is d for d in dests)]
            promote = [(d, _check_write(name, d, sources)) for d in dests]
            ret = _run(func, args, kwargs)
            for d, tag in promote:
                if tag is not None:
                    _tag(d, *tag)
            return ret

        new_weight = _check_mix(op, typed, args, kwargs)
        ret = _run(func, args, kwargs)
        if new_weight or not typed:
            return ret
        first = typed[0]
        if op in _OBSERVE:  # a number is plain; a partial reduction (g.mean(0)) keeps the role
            return ret if op == "svdvals" else _tag_values(ret, first._role, first._dt_name)
        if len({t._role for t in typed}) > 1:  # the pairing ⟨g, d⟩ (only _MIXABLE gets here)
            if not isinstance(ret, Tensor) or ret.ndim == 0:
                return ret  # a number
            return _tag(ret, _DUAL, None, first._dt_name)  # its density g·d: never an update
        return _tag(ret, first._role, _common_norm(typed), first._dt_name)


def _tag_values(ret: Any, role: str, name: str | None) -> Any:
    """Tag the floating-point tensors of ndim > 0 in ``ret`` (norm unknown); keep the rest."""
    if isinstance(ret, Tensor):
        return _tag(ret, role, None, name) if ret.ndim > 0 and ret.is_floating_point() else ret
    if isinstance(ret, tuple):
        items = [_tag_values(r, role, name) for r in ret]
        return type(ret)(*items) if hasattr(ret, "_fields") else type(ret)(items)
    return ret


def _foreach(func, name: str, op: str, args: tuple, kwargs: dict):
    """Apply the rules elementwise over the lists of a ``torch._foreach_*`` call."""
    length = len(args[0])
    lists = [a if isinstance(a, (list, tuple)) and len(a) == length else None for a in args]
    inplace = _is_inplace(name)
    tags: list[tuple[str, Norm | None, str | None] | None] = []
    for i in range(length):
        elems = [lst[i] if lst is not None else a for lst, a in zip(lists, args)]
        typed = [e for e in elems if isinstance(e, TypedTensor)]
        if inplace:
            tags.append(_check_write(name, elems[0], [t for t in typed if t is not elems[0]]))
        else:
            tags.append(None if _check_mix(op[len("_foreach_"):], typed, tuple(elems), {})
                        or not typed else (typed[0]._role, _common_norm(typed),
                                           typed[0]._dt_name))
    ret = _run(func, args, kwargs)
    if inplace:
        for d, tag in zip(args[0], tags):
            if tag is not None:
                _tag(d, *tag)
        return ret
    if op in _OBSERVE or not isinstance(ret, (list, tuple)):
        return ret
    return [r if tag is None else _tag(r, *tag) for r, tag in zip(ret, tags)]


class _SpecMeta(type(Tensor)):  # type: ignore[misc]
    """Metaclass of ``Dual[N]``/``Primal[N]``: isinstance checks role and norm tag."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._dt_base) and obj._dt_norm == cls._dt_spec


_SPECS: dict[tuple[type, Norm], type] = {}


def _spec(base: type, norm: Norm) -> type:
    key = (base, norm)
    if key not in _SPECS:
        label = f"{'Dual' if base is DualTensor else 'Primal'}[{norm}]"
        _SPECS[key] = _SpecMeta(label, (base,), {"_dt_base": base, "_dt_spec": norm})
    return _SPECS[key]


def _repr(t: "TypedTensor") -> str:
    with DisableTorchFunctionSubclass():
        body = Tensor.__repr__(_alias(t))
    name = t._dt_name
    return f"{t.type_label}{f' {name!r}' if name else ''} {body}"


class DualTensor(TypedTensor):
    """A dual vector (a gradient) tagged with the norm of its parameter: ``Dual[N]``.

    It cannot be applied to a weight; :func:`dualize` maps it to ``Primal[N]``.
    """

    _role = _DUAL


class PrimalTensor(TypedTensor):
    """A primal vector (an update direction) of norm type ``N``: ``Primal[N]``.

    Made only by :func:`dualize` (or the explicit :func:`assume_primal`); may be applied to a
    weight whose norm is ``N``.
    """

    _role = _PRIMAL


# --- constructors and the door -----------------------------------------------------------


def _alias(t: Tensor) -> Tensor:
    """A plain-class tensor sharing ``t``'s data. ``as_subclass`` needs a storage, which a
    sparse tensor has not; there ``detach`` makes the alias (sparse values carry no graph)."""
    with DisableTorchFunctionSubclass():
        return t.as_subclass(Tensor) if t.layout == torch.strided else t.detach()


def plain(t: Tensor) -> Tensor:
    """A typed tensor as a plain ``torch.Tensor`` sharing its data (the tag is dropped, no
    copy); any other tensor unchanged. For reading values (norms, I/O), never for updates."""
    return _alias(t) if isinstance(t, TypedTensor) else t


def _new(t: Tensor, role: str, norm: Norm | None, name: str | None) -> Tensor:
    return _tag(_alias(t), role, norm, name)


def dual(t: Tensor, norm: "str | Norm | None", name: str | None = None) -> DualTensor:
    """Tag ``t`` as ``Dual[norm]`` (a gradient computed by hand, say). Shares ``t``'s data."""
    n = None if norm is None else _norms.get(norm)
    if n is not None:
        n.check(t, "gradient")
    return _new(t, _DUAL, n, name)  # type: ignore[return-value]


def tag_gradient(g: Tensor, norm: Norm, name: str | None) -> Tensor:
    """Retag a gradient *in place* as ``Dual[norm]`` (no copy): what ``typed()``'s hook does
    after backward."""
    return _tag(g, _DUAL, norm, name)


def role(t: Any) -> str | None:
    """``"dual"``, ``"primal"`` or None for a plain tensor."""
    return t._role if isinstance(t, TypedTensor) else None


def norm_of(t: Any) -> Norm | None:
    """The norm tag of a typed tensor (None for plain tensors or an unknown norm)."""
    return t._dt_norm if isinstance(t, TypedTensor) else None


def dualize(
    g: Tensor,
    norm: "str | Norm | None" = None,
    *,
    scale: float = 1.0,
    method: str | None = None,
) -> PrimalTensor:
    """The only door from dual to primal: ``Dual[N] → Primal[N]``.

    Returns ``scale · dualize_N(g)``, a tensor of ``N``-norm ``scale`` (zero for a zero
    gradient) with ⟨g, dualize(g)⟩ = scale · ‖g‖†. Uses the tag's norm, or ``norm`` for an
    untagged tensor; ``method`` picks the orthogonalization kernel for matrix norms.

    Raises :class:`NormMismatchError` if ``norm`` contradicts the tag, :class:`DualityError`
    for a value that is already primal or whose norm is unknown, :class:`NonFiniteError` for
    NaN/Inf, :class:`ShapeError` for a shape the norm cannot take and :class:`ConfigError`
    for a value that is not a tensor.
    """
    if not isinstance(g, Tensor):
        raise ConfigError(
            f"dualize needs a torch.Tensor (a gradient), got {type(g).__name__}: "
            "`dualtype.dualize(p.grad)`, or `dualtype.dualize(torch.as_tensor(x), norm)`."
        )
    if isinstance(g, PrimalTensor):
        raise DualityError(
            f"dualize was given {_describe(g)}, which is already primal; dualize maps dual "
            "vectors (gradients) to primal ones."
        )
    tag = g._dt_norm if isinstance(g, DualTensor) else None
    n = None if norm is None else _norms.get(norm)
    if tag is not None and n is not None and n != tag:
        raise NormMismatchError(
            f"dualize(g, '{n}') was given {_describe(g)}; the gradient's parameter has norm "
            f"'{tag}'. Drop the norm argument or retag the parameter with dualtype.typed(...)."
        )
    n = n or tag
    if n is None:
        raise ConfigError(
            "dualize needs a norm: the tensor carries none. Pass one, e.g. "
            "`dualtype.dualize(g, 'rms->rms')`, or make the model's gradients typed with "
            "`dualtype.typed(model)`."
        )
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ConfigError(f"dualize scale must be a finite number ≥ 0, got {scale!r}")
    name = g._dt_name if isinstance(g, TypedTensor) else None
    try:
        out = n.dualize(plain(g), method=method)
    except NonFiniteError as e:
        raise NonFiniteError(f"gradient of '{name}': {e}" if name else str(e)) from None
    if scale != 1.0:
        out = out * scale
    return _tag(out, _PRIMAL, n, name)


def assume_primal(x: Tensor, norm: "str | Norm | None", *, reason: str) -> PrimalTensor:
    """Escape hatch: declare ``x`` a primal update of norm ``norm`` without dualizing.

    For updates that deliberately leave the algebra, such as Adam's m/√v. ``reason`` is
    required and kept on the tensor, so every use is greppable and explained.
    """
    if not isinstance(x, Tensor):
        raise ConfigError(f"assume_primal needs a torch.Tensor, got {type(x).__name__}")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(
            "assume_primal needs a reason, e.g. reason='Adam m/sqrt(v) is not a duality map'"
        )
    n = None if norm is None else _norms.get(norm)
    name = x._dt_name if isinstance(x, TypedTensor) else None
    out = _new(x, _PRIMAL, n, name)
    out.__dict__["_dt_reason"] = reason
    return out  # type: ignore[return-value]


torch.serialization.add_safe_globals([DualTensor, PrimalTensor, _norms.get])


# --- torch functions that bypass __torch_function__ ------------------------------------------
# Two ways a Dual reached a weight without a typed operation: the sparse constructors are on
# torch's list of functions that never dispatch __torch_function__ (torch.optim.Adagrad
# rebuilds the sparse update with torch.sparse_coo_tensor, which dropped the tag), and
# vector_to_parameters writes through ``param.data = ...``, which does not dispatch either.
# Both are wrapped once, at import: the sparse constructors keep the tag of their values,
# vector_to_parameters refuses a Dual vector. Code that bound vector_to_parameters before
# dualtype was imported keeps the unwrapped function (dualtype-lint covers it statically).


def _tagging_constructor(make):
    @functools.wraps(make)
    def construct(*args: Any, **kwargs: Any) -> Any:
        typed: list[TypedTensor] = []
        for a in (*args, *kwargs.values()):
            _typed_in(a, typed)
        if not typed:
            return make(*args, **kwargs)
        _require_one_role(make.__name__, typed)
        with DisableTorchFunctionSubclass():
            out = make(*args, **kwargs)
        values = [t for t in typed if t.is_floating_point() or t.is_complex()] or typed
        return _tag(out, values[0]._role, _common_norm(values), values[0]._dt_name)

    construct.__dualtype_wraps__ = make  # type: ignore[attr-defined]
    return construct


def _checked_vector_to_parameters(original):
    @functools.wraps(original)
    def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
        if isinstance(vec, TypedTensor):
            params = list(parameters)
            sources = [vec]
            for p in params:  # the same check as any in-place write into each weight
                _check_write("vector_to_parameters", p, sources)
            parameters = params
        return original(vec, parameters)

    vector_to_parameters.__dualtype_wraps__ = original  # type: ignore[attr-defined]
    return vector_to_parameters


def _install_wrappers() -> None:
    import torch.nn.utils as nn_utils
    import torch.nn.utils.convert_parameters as convert

    for fname in ("sparse_coo_tensor", "sparse_csr_tensor", "sparse_csc_tensor",
                  "sparse_bsr_tensor", "sparse_bsc_tensor", "sparse_compressed_tensor"):
        make = getattr(torch, fname, None)
        if make is not None and not hasattr(make, "__dualtype_wraps__"):
            setattr(torch, fname, _tagging_constructor(make))
    v2p = convert.vector_to_parameters
    if not hasattr(v2p, "__dualtype_wraps__"):
        checked = _checked_vector_to_parameters(v2p)
        convert.vector_to_parameters = checked
        if getattr(nn_utils, "vector_to_parameters", None) is v2p:
            nn_utils.vector_to_parameters = checked


_install_wrappers()
