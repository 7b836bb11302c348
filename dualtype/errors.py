"""dualtype's exception types, one hierarchy under :class:`DualtypeError`::

    DualtypeError
    ├── DualityError           a type rule was broken (docs/design.md §4)
    │   └── NormMismatchError  ... by two different norms
    ├── ShapeError             a bad value: the shape or dtype does not fit (also ValueError)
    ├── NonFiniteError         a bad value: NaN or Inf (also ValueError)
    └── ConfigError            a bad argument or setting (also ValueError)

``except DualityError`` catches type violations only, never a bad setting such as ``lr=-1``.
None of them derives from ``TypeError`` on purpose: PyTorch converts a ``TypeError``
raised inside ``__torch_function__`` during a Python operator (``-=``, ``+``, ``-``) into
``NotImplemented``, and Python then silently falls back to another operator (docs/design.md §4).
"""

from __future__ import annotations

__all__ = ["DualtypeError", "DualityError", "NormMismatchError", "ShapeError", "NonFiniteError", "ConfigError"]


class DualtypeError(Exception):
    """The root of every error dualtype raises on purpose."""


class DualityError(DualtypeError):
    """A dual vector (a gradient) was used where a primal one (a weight update) is required,
    or primal and dual values were mixed."""


class NormMismatchError(DualityError):
    """Two typed values carry different norms, or a primal update's norm differs from the
    norm of the weight it is applied to."""


class ShapeError(DualtypeError, ValueError):
    """A tensor's shape or dtype does not fit the norm or kernel it was given to."""


class NonFiniteError(DualtypeError, ValueError):
    """A tensor holds NaN or Inf where a finite value is required (dualize never returns NaN)."""


class ConfigError(DualtypeError, ValueError):
    """A bad argument: an unknown norm name, a negative learning rate, a momentum ≥ 1, a value
    that is not a tensor where a tensor is required, ..."""
