"""dualtype-lint: a static linter that finds raw gradients applied to weights.

It never imports torch, so it runs in a CI job without torch installed. See docs/lint.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
