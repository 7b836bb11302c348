"""Annotations for typed training code, checked by beartype (and jaxtyping for shapes).

>>> from jaxtyping import Float
>>> from dualtype.typing import Dual, Primal, typechecked
>>> @typechecked
... def direction(g: Float[Dual["rms->rms"], "out in"]) -> Float[Primal["rms->rms"], "out in"]:
...     return dualtype.dualize(g)

``Dual`` is :class:`~dualtype.DualTensor`: ``Dual`` alone matches any dual value,
``Dual["rms->rms"]`` only duals of that norm; ``Primal`` likewise. They compose with
jaxtyping's dtype/shape annotations (``Float[Dual["l1->rms"], "vocab d"]``).

What is checked, and what it costs (one thread, a function of two annotated arguments and an
annotated return, measured with timeit): roles, norms and array types by beartype, ~1 µs a
call; jaxtyping dtype and shape checks, ~130 µs a call. The functions users annotate run a few
times per training step (a dualize of a 64×32 gradient alone takes ~300 µs), so shapes are
checked by default. On a hot path turn them off: ``@typechecked(shapes=False)`` for one
function, ``dualtype.typing.set_shapes(False)`` before decorating, or ``DUALTYPE_SHAPES=0``
in the environment. Never put a checked function inside a ``torch.compile`` region.

A violation raises one of dualtype's errors whose first line names the argument, what was
expected (role, norm, dtype, shape) and what came: :class:`NormMismatchError` for a value of
the right role under another norm, :class:`ShapeError` for a shape that does not fit the
annotation (or the sizes bound by earlier arguments), :class:`DualityError` otherwise (a
wrong role, dtype or type). All three are :class:`DualtypeError`; none is a ``TypeError``.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import types
from typing import Any, Callable, TypeVar

import jaxtyping
import torch
from beartype import beartype
from beartype.door import is_bearable
from beartype.roar import BeartypeCallHintViolation

from dualtype.errors import DualityError, DualtypeError, NormMismatchError, ShapeError
from dualtype.tensor import DualTensor as Dual
from dualtype.tensor import PrimalTensor as Primal
from dualtype.tensor import TypedTensor

__all__ = ["Dual", "Primal", "typechecked", "set_shapes", "shapes", "set_debug", "debug"]

F = TypeVar("F", bound=Callable[..., Any])
_shapes = (os.environ.get("DUALTYPE_SHAPES", "1").lower() not in ("0", "false", "off")
           or os.environ.get("DUALTYPE_DEBUG", "") not in ("", "0"))


def set_shapes(on: bool) -> None:
    """Check shapes (jaxtyping) in functions decorated from now on (default: on)."""
    global _shapes
    _shapes = bool(on)


def shapes() -> bool:
    """Whether :func:`typechecked` checks shapes for functions decorated now."""
    return _shapes


# Earlier names of the same switch (shape checks were once a debug-mode feature).
set_debug = set_shapes
debug = shapes


def _fast(annotation: Any) -> Any:
    """Drop a jaxtyping dtype/shape annotation to its array type (``Dual["rms->rms"]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray):
        return annotation.array_type
    return annotation


# --- diagnosis: which argument failed, and how --------------------------------------------


def _label(cls: Any) -> str:
    """``Dual[rms->rms]``, ``Dual``, ``Primal``, ``Tensor``, or the annotation's repr."""
    if isinstance(cls, type):
        if issubclass(cls, TypedTensor):
            spec = getattr(cls, "_dt_spec", None)
            base = "Dual" if issubclass(cls, Dual) else "Primal"
            return f"{base}[{spec}]" if spec is not None else base
        return cls.__name__
    return repr(cls)


def _expected(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray):
        return f"{_label(annotation.array_type)} {annotation.dtype.__name__} '{annotation.dim_str}'"
    return _label(annotation)


def _actual(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if isinstance(value, TypedTensor):
            kind = value.type_label
        else:
            kind = "plain Tensor"
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{kind} {dtype}{list(value.shape)}"
    return f"{type(value).__name__} {value!r:.60}"


def _shape_problem(dim_str: str, shape: tuple[int, ...], bound: dict[str, Any]) -> str | None:
    """Match ``shape`` against a jaxtyping dim string, binding named sizes in ``bound``;
    return what does not fit, or None. Handles named (``out``), fixed (``3``), broadcastable
    (``#n``), anonymous (``_``) and one variadic (``...``, ``*batch``) dimension; symbolic
    expressions are accepted unchecked (jaxtyping has already judged them)."""
    tokens = dim_str.split()
    var = [i for i, t in enumerate(tokens) if t == "..." or t.startswith("*")]
    if var:
        i = var[0]
        head, tail = tokens[:i], tokens[i + 1:]
        if len(shape) < len(head) + len(tail):
            return f"needs at least {len(head) + len(tail)} dims, got {len(shape)}"
        name = tokens[i].lstrip("*")
        middle = tuple(shape[len(head): len(shape) - len(tail)])
        if name not in ("...", "") and bound.setdefault("*" + name, middle) != middle:
            return f"'*{name}' is {bound['*' + name]} from an earlier argument, here {middle}"
        pairs = list(zip(head, shape[: len(head)])) + list(zip(tail, shape[len(shape) - len(tail):]))
    else:
        if len(tokens) != len(shape):
            return f"needs {len(tokens)} dims, got {len(shape)}"
        pairs = list(zip(tokens, shape))
    for tok, size in pairs:
        if tok.isdigit():
            if int(tok) != size:
                return f"dim '{tok}' must be {tok}, got {size}"
            continue
        broadcast = tok.startswith("#")
        name = tok.lstrip("#")
        if name == "_" or not name.isidentifier():
            continue
        if broadcast and size == 1:
            continue
        if bound.setdefault(name, size) != size:
            return f"'{name}' is {bound[name]} from an earlier argument, here {size}"
    return None


def _problem(name: str, annotation: Any, value: Any, bound: dict[str, Any]) -> DualtypeError | None:
    """The error for ``value`` against ``annotation`` (None if it fits)."""
    head = f"argument '{name}'" if name != "return" else "the return value"
    head = (f"{head} does not match its annotation: expected {_expected(annotation)}, "
            f"got {_actual(value)}")
    jax = isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray)
    kind = annotation.array_type if jax else annotation
    if not is_bearable(value, kind):
        same_role = (isinstance(kind, type) and issubclass(kind, TypedTensor)
                     and isinstance(value, getattr(kind, "_dt_base", kind)))
        return (NormMismatchError if same_role else DualityError)(head)
    if not jax or not isinstance(value, torch.Tensor):
        return None
    if str(value.dtype).removeprefix("torch.") not in annotation.dtypes:
        return DualityError(f"{head} (dtype)")
    why = _shape_problem(annotation.dim_str, tuple(value.shape), bound)
    return ShapeError(f"{head} ({why})") if why else None


_NOTHING = object()


def _diagnose(fn: Callable, hints: dict, args: tuple, kwargs: dict, check_shapes: bool,
              ret: Any = _NOTHING) -> DualtypeError | None:
    """The first argument (then the return value) that does not fit its annotation."""
    try:
        call = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return None
    call.apply_defaults()
    bound: dict[str, Any] = {}
    values: list[tuple[str, Any]] = []
    hints = dict(hints)
    for name, value in call.arguments.items():
        kind = call.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:  # *gs: each element has the annotation
            items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            items = [(f"{name}[{k!r}]", v) for k, v in value.items()]
        else:
            items = [(name, value)]
        for item, v in items:
            if name in hints:
                hints[item] = hints[name]
            values.append((item, v))
    if ret is not _NOTHING:  # the function ran: its arguments passed
        values.append(("return", ret))
    for name, value in values:
        if name not in hints:
            continue
        ann = hints[name] if check_shapes else _fast(hints[name])
        err = _problem(name, ann, value, bound)
        if err is not None:
            return err
    return None


def typechecked(fn: F | None = None, *, shapes: bool | None = None) -> F:
    """Check a function's annotations on every call (see the module docstring).

    ``shapes=None`` follows :func:`set_shapes` (default on). Violations raise
    :class:`NormMismatchError`, :class:`ShapeError` or :class:`DualityError`.
    """
    if fn is None:
        return functools.partial(typechecked, shapes=shapes)  # type: ignore[return-value]
    check_shapes = _shapes if shapes is None else shapes
    hints = inspect.get_annotations(fn, eval_str=True)
    # The same code and signature, with shape annotations dropped to their array types
    # unless shapes are checked.
    shadow = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    shadow.__kwdefaults__ = fn.__kwdefaults__
    shadow.__qualname__ = fn.__qualname__
    shadow.__annotations__ = {k: (v if check_shapes else _fast(v)) for k, v in hints.items()}
    came_back = threading.local()  # the return value, so a failed return check can show it

    def capture(*args: Any, **kwargs: Any) -> Any:
        came_back.value = ret = shadow(*args, **kwargs)
        return ret

    functools.update_wrapper(capture, shadow)  # beartype reads the signature via __wrapped__
    checked = jaxtyping.jaxtyped(typechecker=beartype)(capture) if check_shapes else beartype(capture)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        came_back.value = _NOTHING
        try:
            return checked(*args, **kwargs)
        except (BeartypeCallHintViolation, jaxtyping.TypeCheckError) as e:
            ret = came_back.value
            came_back.value = _NOTHING
            err = _diagnose(fn, hints, args, kwargs, check_shapes, ret)
            raise _headed(fn, err, e) from None

    return wrapper  # type: ignore[return-value]


def _headed(fn: Callable, err: DualtypeError | None, cause: Exception | None) -> DualtypeError:
    """``fn: <one-line diagnosis>`` followed by the checker's own report, if any."""
    detail = f"\n{cause}" if cause is not None else ""
    if err is None:  # an annotation our diagnosis does not model: the checker's words
        return DualityError(
            f"{fn.__qualname__}: an argument or the return value does not match its "
            f"annotation (Dual/Primal role, norm, dtype or shape).{detail}"
        )
    return type(err)(f"{fn.__qualname__}: {err}{detail}")
