"""Run the engine over many files: serially for a few files, in worker processes for many."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

from .config import Settings
from .engine import FileResult, lint_path

# Below this many files the cost of starting processes outweighs the work.
SERIAL_MAX_FILES = 16


def _display(path: str, cwd: str) -> str:
    if path == "-":
        return "-"
    ap = os.path.abspath(path)
    rel = os.path.relpath(ap, cwd) if ap.startswith(cwd + os.sep) else ap
    return rel


def _lint_chunk(args: tuple[list[tuple[str, str]], Settings]) -> list[FileResult]:
    chunk, settings = args
    return [lint_path(p, settings, disp) for p, disp in chunk]


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def make_chunks(items: Sequence[tuple[str, str]], jobs: int) -> list[list[tuple[str, str]]]:
    """Balance by size: biggest files first, dealt round-robin into ~4 chunks per worker."""

    def size(p: str) -> int:
        try:
            return os.path.getsize(p)
        except OSError:
            return 0

    order = sorted(items, key=lambda it: -size(it[0]))
    n_chunks = max(1, min(len(order), jobs * 4))
    chunks: list[list[tuple[str, str]]] = [[] for _ in range(n_chunks)]
    for i, it in enumerate(order):
        chunks[i % n_chunks].append(it)
    return chunks


def mp_context():
    # fork: workers inherit the imported libcst instead of importing it again
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def run(files: Sequence[str], settings: Settings, jobs: int = 0, stdin_filename: str | None = None) -> list[FileResult]:
    cwd = os.getcwd()
    items = [(p, stdin_filename if (p == "-" and stdin_filename) else _display(p, cwd)) for p in files]
    jobs = jobs if jobs > 0 else default_jobs()
    jobs = min(jobs, len(items)) if items else 1
    if jobs <= 1 or len(items) <= SERIAL_MAX_FILES or any(p == "-" for p, _ in items):
        return [lint_path(p, settings, d) for p, d in items]

    chunks = make_chunks(items, jobs)
    results: list[FileResult] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp_context()) as pool:
        for part in pool.map(_lint_chunk, [(c, settings) for c in chunks]):
            results.extend(part)
    rank = {d: i for i, (_, d) in enumerate(items)}
    results.sort(key=lambda r: rank.get(r.path, 0))
    return results
