"""Argument predicates shared by every layer (it imports nothing from dualtype).

A ``bool`` is an ``int`` to Python but never a count, a mass or a scale to dualtype.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_int", "is_real"]


def is_int(x: Any) -> bool:
    """A Python ``int`` that is not a ``bool``."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """A Python ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)
