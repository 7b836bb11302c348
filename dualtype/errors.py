"""dualtype's exception types.

None of them derives from ``TypeError`` on purpose: PyTorch converts a ``TypeError``
raised inside ``__torch_function__`` during a Python operator (``-=``, ``+``, ``-``) into
``NotImplemented``, and Python then silently falls back to another operator (docs/design.md §4).
"""

from __future__ import annotations

__all__ = ["DualityError", "NormMismatchError", "ShapeError", "NonFiniteError", "ConfigError"]


class DualityError(Exception):
    """A dual vector (a gradient) was used where a primal one (a weight update) is required,
    or primal and dual values were mixed."""


class NormMismatchError(DualityError):
    """Two typed values carry different norms, or a primal update's norm differs from the
    norm of the weight it is applied to."""


class ShapeError(DualityError, ValueError):
    """A tensor's shape does not fit the norm or kernel it was given to."""


class NonFiniteError(DualityError, ValueError):
    """A tensor holds NaN or Inf where a finite value is required (dualize never returns NaN)."""


class ConfigError(DualityError, ValueError):
    """A bad argument: an unknown norm name, a negative learning rate, a momentum ≥ 1, ..."""
