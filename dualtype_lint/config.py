"""``[tool.dualtype-lint]`` in pyproject.toml, merged with command-line options.

Keys (all optional)::

    [tool.dualtype-lint]
    select = ["DTL"]                 # code prefixes to enable (default: all rules)
    extend-select = []               # added to select
    ignore = []                      # code prefixes to disable
    per-file-ignores = { "tests/*" = ["DTL001"] }
    exclude = ["legacy/", "*_pb2.py"]       # gitignore-style patterns, added to the defaults
    dualizers = ["zeropower_via_newtonschulz5", "mylib.orthogonalize"]

A dualizer without a dot matches any call whose last name component is that name
(``orthogonalize(g)``, ``ops.orthogonalize(g)``); one with dots matches the fully imported
name (``import mylib as m; m.orthogonalize(g)`` is ``mylib.orthogonalize``).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .rules import ALL_RULES, FLOW_CODES

if sys.version_info >= (3, 11):  # pragma: no cover - version dependent
    import tomllib as _toml
else:  # pragma: no cover
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ImportError:  # reported when a configuration file has to be read
        _toml = None  # type: ignore[assignment]

ALL_CODES = tuple(r.code for r in ALL_RULES)
TABLE = "dualtype-lint"
KNOWN_KEYS = frozenset(
    ("select", "extend-select", "ignore", "per-file-ignores", "exclude", "extend-exclude", "dualizers")
)
DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".tox", ".nox", ".eggs", "*.egg-info",
    "__pycache__", "__pypackages__", "node_modules", "build", "dist", "site-packages",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
)


class ConfigError(Exception):
    """Bad configuration or usage; the CLI exits with code 2."""


def expand_codes(prefixes: Iterable[str], what: str) -> set[str]:
    """Turn code prefixes (``DTL``, ``DTL00``, ``DTL001``, ``ALL``) into codes."""
    out: set[str] = set()
    for p in prefixes:
        p = p.strip().upper()
        if not p:
            continue
        if p == "ALL":
            out.update(ALL_CODES)
            continue
        hits = {c for c in ALL_CODES if c.startswith(p)}
        if not hits:
            raise ConfigError(f"{what}: unknown rule code or prefix {p!r} (known: {', '.join(ALL_CODES)})")
        out |= hits
    return out


@dataclass
class Settings:
    """Everything a worker needs to lint one file (picklable)."""

    root: str = "."
    select: frozenset[str] = frozenset(ALL_CODES)
    per_file_ignores: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    dualizers: tuple[str, ...] = ()
    config_path: str | None = None
    prefilter: bool = True
    fix: bool = False
    diff: bool = False
    unsafe_fixes: bool = False
    timeout: float = 60.0  # seconds per file, then DTL902 and the next file (engine); 0: no limit

    def codes_for(self, path: str) -> frozenset[str]:
        """The enabled codes for one file after per-file-ignores."""
        if not self.per_file_ignores:
            return self.select
        rel = relative_posix(path, self.root)
        base = rel.rsplit("/", 1)[-1]
        codes = set(self.select)
        for pattern, ignored in self.per_file_ignores:
            if _glob_match(rel, base, pattern):
                codes -= ignored
        return frozenset(codes)


def relative_posix(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:  # different drives on Windows
        rel = os.path.abspath(path)
    return rel.replace(os.sep, "/")


def _glob_match(rel: str, base: str, pattern: str) -> bool:
    pattern = pattern.replace(os.sep, "/")
    if pattern.endswith("/"):
        pattern += "*"
    if "/" not in pattern:
        return fnmatch.fnmatchcase(base, pattern)
    pattern = pattern.lstrip("/")
    if fnmatch.fnmatchcase(rel, pattern):
        return True
    # "dir/**/x.py" also matches "dir/x.py"
    return "**/" in pattern and fnmatch.fnmatchcase(rel, pattern.replace("**/", ""))


# ----------------------------------------------------------------------------- loading


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file with the standard library's ``tomllib`` (``tomli`` before Python 3.11)."""
    data = path.read_bytes()
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError(f"{path}: reading TOML on Python < 3.11 needs the `tomli` package")
    try:
        return _toml.loads(data.decode("utf-8"))
    except Exception as exc:  # tomllib.TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def find_config(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.dualtype-lint]`` table."""
    start = start.resolve()
    for d in (start, *start.parents):
        p = d / "pyproject.toml"
        if p.is_file():
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if f"tool.{TABLE}" in text or f'tool."{TABLE}"' in text:
                return p
    return None


def find_root(start: Path) -> Path:
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / ".git").exists() or (d / "pyproject.toml").is_file():
            return d
    return start


def _str_list(table: dict[str, Any], key: str, where: str) -> list[str]:
    v = table.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: `{key}` must be a list of strings")
    return v


def read_table(path: Path) -> dict[str, Any]:
    data = load_toml(path)
    table = data.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.{TABLE}]: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_KEYS))})"
        )
    return table


def build_settings(
    *,
    cwd: Path,
    config: str | None = None,
    isolated: bool = False,
    select: Sequence[str] | None = None,
    extend_select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    extend_exclude: Sequence[str] = (),
    dualizers: Sequence[str] = (),
) -> Settings:
    """Merge the config file and command-line options (the command line wins)."""
    table: dict[str, Any] = {}
    cfg_path: Path | None = None
    if config is not None:
        cfg_path = Path(config)
        if not cfg_path.is_file():
            raise ConfigError(f"--config: no such file: {config}")
        table = read_table(cfg_path)
    elif not isolated:
        cfg_path = find_config(cwd)
        if cfg_path is not None:
            table = read_table(cfg_path)
    where = str(cfg_path) if cfg_path else "config"
    root = cfg_path.parent.resolve() if cfg_path else find_root(cwd)

    base_select = _str_list(table, "select", where) if "select" in table else ["DTL"]
    if select is not None:
        base_select = list(select)
    codes = expand_codes(base_select, "select")
    codes |= expand_codes(_str_list(table, "extend-select", where), "extend-select")
    codes |= expand_codes(extend_select, "--extend-select")
    codes -= expand_codes(_str_list(table, "ignore", where), "ignore")
    codes -= expand_codes(ignore, "--ignore")

    pfi_raw = table.get("per-file-ignores", {})
    if not isinstance(pfi_raw, dict):
        raise ConfigError(f"{where}: `per-file-ignores` must be a table of pattern = [codes]")
    pfi = []
    for pattern, codes_list in pfi_raw.items():
        if isinstance(codes_list, str):
            codes_list = [codes_list]
        if not isinstance(codes_list, list):
            raise ConfigError(f"{where}: per-file-ignores[{pattern!r}] must be a list of codes")
        pfi.append((pattern, frozenset(expand_codes(codes_list, f"per-file-ignores[{pattern!r}]"))))

    exclude = list(DEFAULT_EXCLUDE)
    exclude += _str_list(table, "exclude", where)
    exclude += _str_list(table, "extend-exclude", where)
    exclude += list(extend_exclude)
    dz = _str_list(table, "dualizers", where) + list(dualizers)

    return Settings(
        root=str(root),
        select=frozenset(codes),
        per_file_ignores=tuple(pfi),
        exclude=tuple(exclude),
        dualizers=tuple(dz),
        config_path=str(cfg_path) if cfg_path else None,
    )


__all__ = ["Settings", "ConfigError", "build_settings", "expand_codes", "FLOW_CODES"]
