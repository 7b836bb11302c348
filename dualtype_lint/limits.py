"""Bound what one file can cost: no crash of the linting process, no hang.

libcst's native parser recurses on the C stack (it segfaults on ~10,000 nested unary
operators or ``and`` terms) and is quadratic in the length of a left-recursive chain (``a +
a + ...``, ``a.x.x...``, ``a[0][0]...``, ``a()()...``, ``**``, ``lambda:``). So:

1. :func:`check_structure` parses with CPython first (C, linear, and it refuses what is too
   deep with an exception instead of a crash) and measures the nesting depth of the tree,
   counting an ``and``/``or`` chain as the nested chain libcst makes of it. Deeper than
   :data:`MAX_DEPTH` is a DTL900 and never reaches libcst. Below it a chain costs at most
   ``MAX_DEPTH`` times its length, so the parse is linear in the file size. The engine skips
   this parse for a file whose text alone bounds its depth low (:mod:`dualtype_lint.nesting`).
2. :func:`run_bounded` runs the libcst parse and the analysis in a thread with a large stack
   (deep recursion stays off the main thread's 8 MB stack; the thread is reused for the next
   file unless it overran); for a file that is deep or big,
   that thread runs in a forked child that is killed at the time budget (native code cannot
   be interrupted otherwise). Over budget is :class:`OverBudget`; a child that dies is
   :class:`Crashed`. Elsewhere an over-budget thread is stopped at its next Python bytecode.
"""

from __future__ import annotations

import ast
import ctypes
import gc
import os
import pickle
import queue
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

MAX_DEPTH = 1000  # the deepest real code we know of (generated sympy tables) is ~600
THREAD_STACK = 512 * 1024 * 1024  # virtual; only the pages used are committed
HEAVY_DEPTH = 100  # deeper than 99.9% of real files: their parse may run long, in native code
HEAVY_COST = 6_000_000  # len(text) * depth: a big file, ~2 s of work
_stack_lock = threading.Lock()


class OverBudget(BaseException):
    """The file took longer than its time budget (a BaseException: no ``except Exception``
    in the analysis may swallow it)."""


class Crashed(Exception):
    """The child process linting the file died (a native crash)."""


def _weighted_depth(tree: ast.AST) -> int:
    best = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    pop, push, AST, BoolOp = stack.pop, stack.append, ast.AST, ast.BoolOp
    while stack:
        node, d = pop()
        if type(node) is BoolOp:  # libcst nests `a and b and c` as ((a and b) and c)
            d += len(node.values) - 2  # type: ignore[attr-defined]
        if d > best:
            best = d
        d += 1
        for name in node._fields:  # ast.iter_child_nodes, without its generators
            c = getattr(node, name, None)
            if isinstance(c, AST):
                if c._fields:
                    push((c, d))
                elif d > best:  # a leaf without fields (Load, Add, Eq, ...): only its depth
                    best = d
            elif type(c) is list:
                for x in c:
                    if isinstance(x, AST):
                        if x._fields:
                            push((x, d))
                        elif d > best:
                            best = d
    return best


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (unless it was off already). For the linter's own
    passes over a file's trees: CPython's AST and libcst's CST hold no reference cycles (they
    are freed by reference counting), but while one is alive every full collection that the
    pass's allocations trigger traverses all of it. Measured on bench_lint's 286 torch files
    (benchmarks/lint.md, re-run of 2026-12-06 22:28-22:58 UTC): the structure check of the 11 big
    files 0.67 -> 0.48 s, the analysis 1.37 -> 1.28 s. The libcst parse itself is never run
    paused, so it costs what a bare ``libcst.parse_module`` does. Cycles made inside (an
    analyzer and its function summaries) are collected by the next collection after it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check_structure(text: str) -> tuple[str, tuple[int, int, str] | None, int]:
    """``("ok", None, depth)``, ``("syntax", (line, col, msg), 0)`` for a syntax error, or
    ``("deep", (1, 1, msg), depth)`` for code nested too deeply to parse safely. (The cyclic
    GC is paused meanwhile: see :func:`gc_paused`.)"""
    if sys.version_info < (3, 11):  # ast.parse has no depth check yet: 200k `1+1+...` segfaults
        return _run_threaded(lambda: _paused_check(text), 0)
    return _paused_check(text)


def _paused_check(text: str) -> tuple[str, tuple[int, int, str] | None, int]:
    with gc_paused():  # the tree is freed inside, by reference counting
        return _check_structure(text)


def _check_structure(text: str) -> tuple[str, tuple[int, int, str] | None, int]:
    try:
        tree = ast.parse(text)
    except SyntaxError as se:
        return "syntax", (se.lineno or 1, max(1, se.offset or 1), se.msg), 0
    except (MemoryError, RecursionError) as exc:  # CPython's own nesting limits
        msg = f"could not parse: the code is nested too deeply ({type(exc).__name__} in CPython's parser)"
        return "deep", (1, 1, msg), 0
    except ValueError as exc:  # NUL bytes (Python < 3.12)
        return "syntax", (1, 1, f"could not parse: ValueError: {exc}"), 0
    depth = _weighted_depth(tree)
    if depth > MAX_DEPTH:
        msg = (f"could not parse: the code is nested too deeply (depth {depth} > {MAX_DEPTH}; "
               "e.g. a very long operator chain)")
        return "deep", (1, 1, msg), depth
    return "ok", None, depth


def light_depth(size: int) -> int:
    """The largest depth at which a file of ``size`` characters is not :func:`is_heavy`."""
    return min(HEAVY_DEPTH, HEAVY_COST // max(size, 1))


def is_heavy(size: int, depth: int) -> bool:
    """Worth a child process that can be killed at the budget (a thread cannot be stopped
    while libcst's native parser runs)."""
    return depth > HEAVY_DEPTH or size * max(depth, 1) > HEAVY_COST


def run_bounded(fn: Callable[[], T], timeout: float, isolate: bool) -> T:
    """``fn()`` within ``timeout`` seconds (0: no limit); in a child process if ``isolate``
    and the platform can fork, else in a big-stack thread."""
    if isolate and hasattr(os, "fork"):  # the child's main thread has a small stack too
        return _run_forked(lambda: _run_threaded(fn, 0, pooled=False), timeout)
    return _run_threaded(fn, timeout)


def _run_threaded(fn: Callable[[], T], timeout: float, pooled: bool = True) -> T:
    """``fn()`` in a big-stack thread. A thread that finished in time is kept for the next
    call (``pooled``), so the stack pages it touched stay mapped instead of being faulted in
    afresh for every file; a thread that overran is told to stop and never reused."""
    worker = None
    if pooled:
        with _idle_lock:
            worker = _idle.pop() if _idle else None
    if worker is None or not worker.thread.is_alive():
        worker = _Worker()
    box: dict[str, object] = {}
    done = threading.Event()
    worker.jobs.put((fn, box, done))
    if not done.wait(timeout if timeout > 0 else None):
        # stop the analysis at its next bytecode (native code finishes first); the thread is
        # a daemon, so a stuck one never holds up the exit, and it ends after this job
        worker.jobs.put(None)
        api = getattr(ctypes, "pythonapi", None)  # CPython only
        if api is not None:
            api.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.thread.ident or 0), ctypes.py_object(OverBudget))
            done.wait(1.0)
        raise OverBudget
    if pooled:
        with _idle_lock:
            _idle.append(worker)
    else:
        worker.jobs.put(None)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class _Worker:
    """A daemon thread with a big stack that runs jobs until it gets None."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = _start_thread(self._loop)

    def _loop(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                fn, box, done = job
                try:
                    box["value"] = fn()
                except BaseException as exc:  # re-raised in the caller's thread
                    box["error"] = exc
                done.set()
        except OverBudget:  # the stop request came as fn() returned: nobody waits for it
            pass


_idle: list[_Worker] = []  # finished their last job in time
_idle_lock = threading.Lock()


def _start_thread(target: Callable[[], None]) -> threading.Thread:
    """A daemon thread with a :data:`THREAD_STACK` stack, or the default one where the
    platform refuses that much (a ulimit on virtual memory)."""
    for size in (THREAD_STACK, 0):
        with _stack_lock:  # stack_size() is process-wide: set it only around this start
            try:
                old = threading.stack_size(size)
            except (ValueError, RuntimeError):
                continue
            try:
                t = threading.Thread(target=target, name="dualtype-lint-file", daemon=True)
                t.start()
                return t
            except RuntimeError:  # "can't start new thread"
                if size == 0:
                    raise
            finally:
                threading.stack_size(old)
    raise RuntimeError("cannot start a thread")


def _child(fn: Callable[[], object], w: int, timeout: float) -> None:
    """In the forked child: never returns."""
    code = 0
    try:
        if timeout > 0:  # a child the parent cannot kill (parent gone) still ends
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(timeout) + 5)
        try:
            payload = pickle.dumps((True, fn()), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:
            payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
        view = memoryview(payload)
        while view:
            view = view[os.write(w, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _run_forked(fn: Callable[[], T], timeout: float) -> T:
    r, w = os.pipe()
    gc.freeze()  # the child's collections then skip the parent's objects: fewer pages copied
    pid = -1
    try:
        pid = os.fork()
    finally:
        if pid != 0:
            gc.unfreeze()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(r)
        _child(fn, w, timeout)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic() if timeout > 0 else None
            if left is not None and left <= 0:
                raise OverBudget
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                data = os.read(r, 1 << 20)
                if not data:
                    break
                chunks.append(data)
    except BaseException:  # over budget, or interrupted: the child goes too
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        raise Crashed(f"the process linting this file died (signal {sig})" if sig else "the process linting this file died")
    ok, value = pickle.loads(b"".join(chunks))
    if not ok:
        raise Crashed(f"in the child process: {value}")
    return value
