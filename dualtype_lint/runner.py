"""Run the engine over many files: serially for a few files, in worker processes for many."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Sequence

from .config import Settings
from .engine import Diagnostic, FileResult, lint_path
from .rules import INTERNAL_ERROR

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


def _isolate(items: Sequence[tuple[str, str]], settings: Settings) -> list[FileResult]:
    """Re-lint files of crashed chunks one per task, so that only the file that kills a
    worker is reported (DTL902), and the others get their real results."""
    out: list[FileResult] = []
    pool = ProcessPoolExecutor(max_workers=1, mp_context=mp_context(), initializer=_worker_init)
    try:
        for path, disp in items:
            try:
                out.extend(pool.submit(_lint_chunk, ([(path, disp)], settings)).result())
            except BrokenProcessPool:
                res = FileResult(disp, internal_error=True)
                msg = "internal error: the parser crashed on this file (the worker process died)"
                res.diagnostics.append(Diagnostic(disp, INTERNAL_ERROR, msg, 1, 1, 1, 1))
                out.append(res)
                pool.shutdown(wait=False)
                pool = ProcessPoolExecutor(max_workers=1, mp_context=mp_context(), initializer=_worker_init)
    finally:
        pool.shutdown(wait=True)
    return out


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


def _worker_init() -> None:
    """Linux: die with the parent (a CI timeout that kills dualtype-lint must not leave
    workers running). Best effort, elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent is already gone
            os._exit(1)
    except Exception:
        pass


def mp_context():
    # fork: workers inherit the imported libcst instead of importing it again
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def run(files: Sequence[str], settings: Settings, jobs: int = 0, stdin_filename: str | None = None) -> list[FileResult]:
    """Lint ``files`` (paths as :func:`dualtype_lint.files.discover` returns them; ``"-"`` is
    standard input, reported as ``stdin_filename`` if given) with ``settings``.

    ``jobs`` worker processes (0: one per CPU); a few files, or stdin, are linted serially.
    Returns one :class:`FileResult` per file, in the order of ``files``, with paths shown
    relative to the current directory. A worker that crashes costs only the file that killed
    it (a DTL902 on that file); nothing raises.
    """
    cwd = os.getcwd()
    items = [(p, stdin_filename if (p == "-" and stdin_filename) else _display(p, cwd)) for p in files]
    jobs = jobs if jobs > 0 else default_jobs()
    jobs = min(jobs, len(items)) if items else 1
    if jobs <= 1 or len(items) <= SERIAL_MAX_FILES or any(p == "-" for p, _ in items):
        return [lint_path(p, settings, d) for p, d in items]

    chunks = make_chunks(items, jobs)
    results: list[FileResult] = []
    failed: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp_context(), initializer=_worker_init) as pool:
        futures = {pool.submit(_lint_chunk, (c, settings)): c for c in chunks}
        for fut in as_completed(futures):
            try:
                results.extend(fut.result())
            except BrokenProcessPool:  # a worker died (a native crash in the parser)
                failed.extend(futures[fut])
    if failed:
        results.extend(_isolate(failed, settings))
    rank = {d: i for i, (_, d) in enumerate(items)}
    results.sort(key=lambda r: rank.get(r.path, 0))
    return results
