"""The throughput work of issue 12 must not change what the linter finds.

- A loop body is walked a second time only if that walk could differ from the first
  (``Statements._walk_again_same``): with the shortcut turned off, every fixture and corpus
  file gives the same findings, and so do loops built to need the second walk.
- ``branches.fast_children`` lists the nodes libcst's ``.children`` lists; ``declared_outside``
  visits statements only and still finds declarations nested anywhere.
- ``limits.gc_paused`` leaves the collector as it found it.
"""

from __future__ import annotations

import gc
from pathlib import Path

import libcst as cst
import pytest

from dualtype_lint.analysis import branches
from dualtype_lint.analysis.statements import Statements
from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text
from dualtype_lint.limits import gc_paused

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES = sorted(FIXTURES.glob("*/*.py"))
ALL = Settings(prefilter=False)


def _findings(text: str) -> list[tuple]:
    res = lint_text(text, "f.py", ALL)
    return sorted((d.code, d.line, d.col, d.end_line, d.end_col, d.message) for d in res.diagnostics)


def _without_shortcut(monkeypatch, text: str) -> list[tuple]:
    with monkeypatch.context() as m:
        m.setattr(Statements, "_walk_again_same", lambda self, cur, nxt, before: False)
        return _findings(text)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_loop_shortcut_changes_no_finding(path, monkeypatch):
    text = path.read_text(encoding="utf-8")
    assert _findings(text) == _without_shortcut(monkeypatch, text)


# Loops whose second walk matters: a name bound late in the body is read early in the next
# iteration (a free gradient name, a d<name>, an alias written through), or the body defines
# a function or imports.
LOOPS = {
    "free grads bound later": """
def step(params, compute):
    for p in params:
        p.add_(grads)
        grads = compute()
""",
    "hand-written gradient": """
def train(W1, x, steps):
    for _ in range(steps):
        W1 -= 0.1 * dW1
        dW1 = x.T @ x
""",
    "buffer alias written through": """
def step(params, state):
    for p in params:
        p.add_(buf)
        buf = state["m"]
        buf.add_(p.grad)
""",
    "function defined in the body": """
def run(params):
    for p in params:
        g = helper(p)
        p.add_(g)
        def helper(q):
            return q.grad
""",
    "zip tuples in nested loops": """
def step(params):
    for i in range(3):
        for w, g in zip(params, [p.grad for p in params]):
            w.add_(g)
        last = w
""",
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_loops_that_need_the_second_walk(name, monkeypatch):
    text = LOOPS[name]
    assert _findings(text) == _without_shortcut(monkeypatch, text)


def test_fast_children_lists_the_same_nodes():
    for path in SOURCES[:12]:
        stack: list[cst.CSTNode] = [cst.parse_module(path.read_text(encoding="utf-8"))]
        while stack:
            n = stack.pop()
            assert sorted(map(id, branches.fast_children(n))) == sorted(map(id, n.children)), type(n)
            stack.extend(n.children)


def test_declared_outside_finds_nested_declarations():
    src = """
def f():
    global a
    if x:
        try:
            nonlocal_ok = 1
        except E:
            global b
        finally:
            with m:
                global c
    for i in r:
        pass
    else:
        global d
    while t:
        match v:
            case 1:
                global e
    class K:
        def g():
            nonlocal h
    def inner(): global i2
"""
    fn = cst.parse_module(src).body[0]
    assert branches.declared_outside(fn) == frozenset({"a", "b", "c", "d", "e", "h", "i2"})


def test_gc_paused_leaves_the_collector_as_it_was():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
