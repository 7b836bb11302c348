"""``python -m dualtype_lint``: the same as the ``dualtype-lint`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
