"""An optional flake8 plugin: ``flake8 --select DTL`` runs the same rules.

Registered as the ``DTL`` entry point in the ``flake8.extension`` group. Configuration
(``dualizers``, ``per-file-ignores``, ...) is read from ``[tool.dualtype-lint]`` in the nearest
pyproject.toml; selection and ``# noqa`` are flake8's own. Columns follow flake8's plugin API
(0-based; flake8 prints them 1-based, so the numbers shown match ``dualtype-lint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from . import __version__
from .config import ConfigError, Settings, build_settings
from .engine import lint_text

_SETTINGS: Settings | None = None


def _settings() -> Settings:
    global _SETTINGS
    if _SETTINGS is None:
        try:
            _SETTINGS = build_settings(cwd=Path.cwd())
        except ConfigError:
            _SETTINGS = Settings()
    return _SETTINGS


class DualtypeLintChecker:
    name = "dualtype-lint"
    version = __version__

    def __init__(self, tree: Any = None, lines: Sequence[str] = (), filename: str = "stdin") -> None:
        self.lines = lines
        self.filename = filename

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        text = "".join(self.lines)
        # lint_text honours `# noqa: DTL...` with flake8's syntax, so both agree on suppression
        res = lint_text(text, self.filename, _settings())
        for d in res.diagnostics:
            yield d.line, d.col - 1, f"{d.code} {d.message}", type(self)
