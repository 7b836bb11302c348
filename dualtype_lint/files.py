"""Which files to lint: walk the given paths, honouring ``.gitignore`` and ``exclude``.

Like ruff: files named on the command line are always linted (unless ``--force-exclude``);
files found by walking a directory are skipped when an exclude pattern or a ``.gitignore``
rule matches them or one of the directories above them (below the path that was given).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .wildmatch import Glob, GlobError, compile_glob

# found by walking a directory (notebooks: their code cells, see dualtype_lint.notebook)
LINTED_SUFFIXES = (".py", ".pyi", ".ipynb")


@dataclass(frozen=True)
class _Rule:
    glob: Glob
    negate: bool
    dir_only: bool
    anchored: bool


def _trim_trailing_spaces(line: str) -> str:
    """As git: trailing spaces go, unless escaped with a backslash."""
    end = len(line)
    while end and line[end - 1] == " ":
        k = end - 1
        slashes = 0
        while k and line[k - 1] == "\\":
            slashes += 1
            k -= 1
        if slashes % 2:  # "\ " is an escaped space: keep it
            break
        end -= 1
    return line[:end]


def compile_pattern(line: str, source: str = "exclude") -> _Rule | None:
    """One gitignore-style line; None for blanks, comments and invalid patterns (warned about)."""
    line = _trim_trailing_spaces(line.rstrip("\n\r"))
    if not line or line.startswith("#"):
        return None
    negate = line.startswith("!")
    if negate:
        line = line[1:]
    elif line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    anchored = "/" in line
    line = line.lstrip("/")
    try:
        glob = compile_glob(line)
    except GlobError as exc:
        _warn(source, line, str(exc))
        return None
    return _Rule(glob, negate, dir_only, anchored)


_warned: set[tuple[str, str]] = set()


def _warn(source: str, pattern: str, why: str) -> None:
    if (source, pattern) not in _warned:
        _warned.add((source, pattern))
        print(f"dualtype-lint: warning: {source}: ignoring invalid pattern {pattern!r} ({why})", file=sys.stderr)


class IgnoreSet:
    """Patterns that apply below one base directory (a .gitignore, or the exclude list)."""

    def __init__(self, base: Path, lines: Iterable[str], source: str = "exclude") -> None:
        self.base = base
        self.rules = [r for r in (compile_pattern(x, source) for x in lines) if r is not None]

    def match(self, path: Path, is_dir: bool) -> bool | None:
        """True: ignored, False: re-included by a ``!`` rule, None: no rule matched."""
        try:
            rel = path.relative_to(self.base).as_posix()
            outside = False
        except ValueError:  # outside the base: only unanchored (name) patterns apply
            rel = path.name
            outside = True
        result = None
        for r in self.rules:
            if (r.dir_only and not is_dir) or (outside and r.anchored):
                continue
            if r.glob.match(rel if r.anchored else rel.rsplit("/", 1)[-1]):
                result = not r.negate
        return result


def _load_gitignore(d: Path) -> IgnoreSet | None:
    p = d / ".gitignore"
    try:
        if p.is_file():
            return IgnoreSet(d, p.read_text(encoding="utf-8", errors="replace").splitlines(), str(p))
    except OSError:
        return None
    return None


def _ignored(path: Path, is_dir: bool, sets: Sequence[IgnoreSet]) -> bool:
    result = False
    for s in sets:
        m = s.match(path, is_dir)
        if m is not None:
            result = m
    return result


def discover(
    paths: Sequence[str],
    *,
    root: str,
    exclude: Sequence[str],
    respect_gitignore: bool = True,
    force_exclude: bool = False,
) -> tuple[list[str], list[str]]:
    """Return ``(files, missing)``: the files to lint (sorted, unique) and paths that do not exist."""
    root_p = Path(root).resolve()
    excl = IgnoreSet(root_p, exclude)
    files: dict[str, None] = {}
    missing: list[str] = []
    for raw in paths:
        if raw == "-":
            files["-"] = None
            continue
        p = Path(raw)
        if not p.exists():
            missing.append(raw)
            continue
        ap = p.resolve()
        sets: list[IgnoreSet] = [excl]
        if respect_gitignore:
            # .gitignore files from the project root down to the given path
            try:
                rel_parts = ap.relative_to(root_p).parts
            except ValueError:
                rel_parts = None
            if rel_parts is not None:
                d = root_p
                chain = [d] + [d.joinpath(*rel_parts[: i + 1]) for i in range(len(rel_parts) - 1)]
                for c in chain:
                    g = _load_gitignore(c)
                    if g is not None:
                        sets.append(g)
        if p.is_file():
            if force_exclude and _excluded_with_parents(ap, root_p, sets):
                continue
            files[str(p)] = None
            continue
        if force_exclude and _excluded_with_parents(ap, root_p, sets, is_dir=True):
            continue
        for f in _walk(p, ap, sets, respect_gitignore):
            files[f] = None
    return sorted(files, key=lambda s: (s == "-", s)), missing


def _excluded_with_parents(ap: Path, root: Path, sets: Sequence[IgnoreSet], is_dir: bool = False) -> bool:
    try:
        rel = ap.relative_to(root)
    except ValueError:
        return _ignored(ap, is_dir, sets)
    cur = root
    parts = rel.parts
    for i, part in enumerate(parts):
        cur = cur / part
        if _ignored(cur, is_dir or i < len(parts) - 1, sets):
            return True
    return False


def _walk(shown: Path, real: Path, sets: list[IgnoreSet], respect_gitignore: bool) -> Iterator[str]:
    if respect_gitignore:
        g = _load_gitignore(real)
        if g is not None and all(s.base != real for s in sets):
            sets = [*sets, g]
    try:
        entries = sorted(os.scandir(real), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
            is_file = e.is_file()
        except OSError:
            continue
        rp = real / e.name
        if _ignored(rp, is_dir, sets):
            continue
        if is_dir:
            yield from _walk(shown / e.name, rp, sets, respect_gitignore)
        elif is_file and e.name.endswith(LINTED_SUFFIXES):
            yield str(shown / e.name)
