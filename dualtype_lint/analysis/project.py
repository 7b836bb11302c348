"""Functions imported from other files of the linted tree (cross-module summaries).

``from .utils import _add_scaled_`` or ``from mypkg.ops import orthogonalize``: the file is
found next to the importing file (relative imports) or in a parent directory (absolute ones),
parsed once per process, and its functions summarized on demand by an analyzer of its own.
Modules that are not found (torch, numpy, ...) are remembered as such, so the lookup costs a
few ``stat`` calls per distinct module and process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import libcst as cst

if TYPE_CHECKING:
    from ..dataflow import Analyzer
    from .summaries import FunctionInfo

MAX_UP = 6  # parent directories searched for an absolute import
MAX_CACHED = 256  # modules kept parsed per process
MAX_BYTES = 64_000  # larger files (framework internals, not helper modules) are not parsed
_FILES: dict[str, "Analyzer | None"] = {}  # path -> analyzer of that module (None: unusable)
_LOOKUPS: dict[tuple[str, str], str | None] = {}  # (directory, module) -> file


def _module_file(directory: str, module: str) -> str | None:
    key = (directory, module)
    if key in _LOOKUPS:
        return _LOOKUPS[key]
    found = None
    dots = len(module) - len(module.lstrip("."))
    parts = [x for x in module.lstrip(".").split(".") if x]
    if dots:
        base = directory
        for _ in range(dots - 1):
            base = os.path.dirname(base)
        found = _candidate(base, parts)
    else:
        d = directory
        for _ in range(MAX_UP):
            found = _candidate(d, parts)
            if found is not None:
                break
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    _LOOKUPS[key] = found
    return found


def _candidate(base: str, parts: list[str]) -> str | None:
    if not parts:
        p = os.path.join(base, "__init__.py")
        return p if os.path.isfile(p) else None
    p = os.path.join(base, *parts)
    if os.path.isfile(p + ".py"):
        return p + ".py"
    if os.path.isfile(os.path.join(p, "__init__.py")):
        return os.path.join(p, "__init__.py")
    return None


def _safe_to_parse(data: bytes) -> bool:
    """The same gate as for a linted file (:mod:`dualtype_lint.limits`): libcst crashes on deep
    nesting and is quadratic in chain length, and this parse runs on the importing file's
    time budget, in its thread, where native code cannot be stopped."""
    from ..engine import decode_source
    from ..limits import HEAVY_DEPTH, check_structure
    from ..nesting import depth_bound

    text = decode_source(data)[0]
    if text is None:
        return False
    bound = depth_bound(text)
    if bound is not None and bound <= HEAVY_DEPTH:
        return True
    kind, _, depth = check_structure(text)
    return kind == "ok" and depth <= HEAVY_DEPTH  # MAX_BYTES bounds the size


def _analyzer_for(path: str, like: "Analyzer") -> "Analyzer | None":
    if path in _FILES:
        return _FILES[path]
    if len(_FILES) >= MAX_CACHED:  # parsed trees are large: keep memory bounded on huge trees
        _FILES.clear()
    _FILES[path] = None  # also guards against import cycles
    try:
        if os.path.getsize(path) > MAX_BYTES:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
        if not _safe_to_parse(data):
            return None
        module = cst.parse_module(data)
    except (OSError, cst.ParserSyntaxError, RecursionError, ValueError, TypeError, MemoryError):
        return None
    from ..dataflow import Analyzer

    a = Analyzer(module, (), like.dualizers, path)
    a.quiet = True
    a.summaries.prescan(a, module)
    for s in module.body:  # imports at the top level, for the module's own calls
        if type(s) is cst.SimpleStatementLine:
            for x in s.body:
                if type(x) in (cst.Import, cst.ImportFrom):
                    a.record_import(x)
    _FILES[path] = a
    return a


def find_function(a: "Analyzer", origin: str) -> "FunctionInfo | None":
    """The function ``origin`` (``.utils._add_scaled_``, ``pkg.mod.f``) in the linted tree."""
    found = _defining_module(a, origin)
    return found[0].summaries.defs.get(found[1]) if found else None


def find_class(a: "Analyzer", origin: str) -> "tuple[Analyzer, str] | None":
    """The analyzer of the file of the tree that defines class ``origin``
    (``pkg.base.BaseOptimizer``), and the class's name there."""
    found = _defining_module(a, origin)
    return found if found and found[1] in found[0].summaries.methods else None


def _defining_module(a: "Analyzer", origin: str) -> "tuple[Analyzer, str] | None":
    """The analyzer of the module part of ``origin`` (another file of the linted tree) and
    the name looked up in it."""
    if a.path is None or a.path == "-" or "." not in origin.lstrip("."):
        return None
    module, _, name = origin.rpartition(".")
    if not module.strip("."):
        module = origin[: len(origin) - len(origin.lstrip("."))]
    directory = os.path.dirname(os.path.abspath(a.path))
    path = _module_file(directory, module)
    if path is None or os.path.abspath(path) == os.path.abspath(a.path):
        return None
    other = _analyzer_for(path, a)
    return None if other is None else (other, name)
