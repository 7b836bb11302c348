"""Annotations for typed training code, checked by beartype (and jaxtyping for shapes).

>>> from jaxtyping import Float
>>> from dualtype.typing import Dual, Primal, typechecked
>>> @typechecked
... def direction(g: Float[Dual["rms->rms"], "out in"]) -> Float[Primal["rms->rms"], "out in"]:
...     return dualtype.dualize(g)

``Dual`` is :class:`~dualtype.DualTensor`: ``Dual`` alone matches any dual value,
``Dual["rms->rms"]`` only duals of that norm; ``Primal`` likewise. They compose with
jaxtyping's dtype/shape annotations (``Float[Dual["l1->rms"], "vocab d"]``).

Cost (measured by ``benchmarks/bench_overhead.py``): role and norm checks by beartype cost about
a microsecond per call; jaxtyping shape checks cost tens to hundreds of microseconds. So
:func:`typechecked` checks shapes only in debug mode (``DUALTYPE_DEBUG=1`` in the environment,
or ``dualtype.typing.set_debug(True)`` before decorating, or ``shapes=True``); otherwise it
checks roles, norms and array types only. Never put a checked function inside a
``torch.compile`` region.
"""

from __future__ import annotations

import functools
import inspect
import os
import types
from typing import Any, Callable, TypeVar

import jaxtyping
from beartype import beartype
from beartype.roar import BeartypeCallHintViolation

from dualtype.errors import DualityError
from dualtype.tensor import DualTensor as Dual
from dualtype.tensor import PrimalTensor as Primal

__all__ = ["Dual", "Primal", "typechecked", "set_debug", "debug"]

F = TypeVar("F", bound=Callable[..., Any])
_debug = os.environ.get("DUALTYPE_DEBUG", "") not in ("", "0")


def set_debug(on: bool) -> None:
    """Turn shape checking on for functions decorated from now on."""
    global _debug
    _debug = bool(on)


def debug() -> bool:
    """Whether :func:`typechecked` currently checks shapes."""
    return _debug


def _fast(annotation: Any) -> Any:
    """Drop a jaxtyping dtype/shape annotation to its array type (``Dual["rms->rms"]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray):
        return annotation.array_type
    return annotation


def typechecked(fn: F | None = None, *, shapes: bool | None = None) -> F:
    """Check a function's annotations on every call; violations raise :class:`DualityError`.

    ``shapes=None`` follows debug mode (see the module docstring).
    """
    if fn is None:
        return functools.partial(typechecked, shapes=shapes)  # type: ignore[return-value]
    check_shapes = _debug if shapes is None else shapes
    if check_shapes:
        checked = jaxtyping.jaxtyped(typechecker=beartype)(fn)
    else:
        # The same code and signature with shape annotations dropped to their array types.
        hints = inspect.get_annotations(fn, eval_str=True)
        shadow = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
        shadow.__kwdefaults__ = fn.__kwdefaults__
        shadow.__qualname__ = fn.__qualname__
        shadow.__annotations__ = {k: _fast(v) for k, v in hints.items()}
        checked = beartype(shadow)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return checked(*args, **kwargs)
        except (BeartypeCallHintViolation, jaxtyping.TypeCheckError) as e:
            raise DualityError(
                f"{fn.__qualname__}: an argument or the return value does not match its "
                f"annotation (Dual/Primal role, norm, dtype or shape).\n{e}"
            ) from None

    return wrapper  # type: ignore[return-value]
