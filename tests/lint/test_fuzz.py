"""Fuzzing the linter: generated expressions and statements, deep nesting, long lines.

Properties: linting never crashes the process and never fails internally (DTL902); valid
Python that is not too deep is parsed (no DTL900); and the time to lint grows linearly with
the size of the file. Time is only compared between two sizes of the same family (a ratio,
with a wide margin), never against a clock.

The bigger ladders are marked slow: ``pytest -m slow tests/lint/test_fuzz.py``.
"""

from __future__ import annotations

import gc
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text
from dualtype_lint.limits import MAX_DEPTH, check_structure

ALL = Settings(prefilter=False)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- generators

NAMES = ["p", "w", "x", "lr", "p.grad", "grads", "g", "d_p", "p.data", "buf", "params"]
ATOMS = st.one_of(
    st.sampled_from(NAMES),
    st.integers(0, 10**6).map(str),
    st.sampled_from(["1.5", "'s'", "None", "True", "...", "f'{p.grad}'", "b'x'"]),
)
BINOPS = ["+", "-", "*", "/", "**", "@", "//", "%", "&", "|", "^", "<<", ">>", "<", "==", "is not", "in"]


def _extend(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(e, st.sampled_from(BINOPS), e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), e).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(e, st.sampled_from(["x", "grad", "data", "T"])).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(e, e).map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(e, st.lists(e, max_size=3)).map(lambda t: f"({t[0]})({', '.join(t[1])})"),
        st.tuples(e, st.sampled_from(["and", "or"]), e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(e, e, e).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(e, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(e, e).map(lambda t: f"{{{t[0]}: {t[1]}}}"),
        e.map(lambda x: f"(lambda q: {x})"),
        e.map(lambda x: f"torch.autograd.grad({x}, params)"),
        e.map(lambda x: f"[q * {x} for q in params]"),
    )


EXPRS = st.recursive(ATOMS, _extend, max_leaves=25)

STATEMENTS = [
    "p.data -= {e}",
    "x = {e}",
    "p.add_({e}, alpha=-lr)",
    "p.data.copy_({e})",
    "w = w - lr * {e}",
    "torch._foreach_add_(params, [{e}])",
    "g = {e}\n{i}p.sub_(g)",
    "if {e}:\n{i}    p.data -= p.grad",
    "for q in {e}:\n{i}    q.data.add_(q.grad)",
    "with torch.no_grad():\n{i}    p -= {e}",
]


def _statement(e: str, template: str, indent: str) -> str:
    return indent + template.format(e=e, i=indent)


STATEMENT_LISTS = st.lists(st.tuples(EXPRS, st.sampled_from(STATEMENTS)), min_size=1, max_size=6)


def _module(stmts: list[tuple[str, str]], in_function: bool) -> str:
    indent = "        " if in_function else ""
    body = "\n".join(_statement(e, t, indent) for e, t in stmts) + "\n"
    if in_function:
        return "import torch\n\n\ndef step(params, lr):\n    for p in params:\n" + body
    return "import torch\n" + body


def _check(res) -> None:
    assert not res.internal_error, res.diagnostics
    for d in res.diagnostics:
        assert d.code != "DTL902", d.message
        assert d.code == "DTL900" or d.code.startswith("DTL00"), d.code
        assert d.line >= 1 and d.col >= 1 and (d.end_line, d.end_col) >= (d.line, d.col)


# ----------------------------------------------------------------------------- properties


@FUZZ
@given(stmts=STATEMENT_LISTS, in_function=st.booleans())
def test_generated_statements_lint_without_crash(stmts, in_function):
    src = _module(stmts, in_function)
    res = lint_text(src, "gen.py", ALL)
    _check(res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # "'int' object is not callable"
        compile(src, "gen.py", "exec")  # the generator writes valid Python ...
    assert not [d for d in res.diagnostics if d.code == "DTL900"], (src, res.diagnostics)  # ... and it parses


# prefix, suffix per level; the innermost expression is p.grad
WRAPPERS = {
    "unary": ("-", ""),
    "not": ("not ", ""),
    "paren": ("(", ")"),
    "list": ("[", "]"),
    "call": ("f(", ")"),
    "lambda": ("lambda: ", ""),
    "attr": ("", ".x"),
    "subscript": ("", "[0]"),
    "called": ("", "()"),
    "plus": ("", " + p"),
    "pow": ("p ** ", ""),
    "and": ("", " and p"),
    "ifexp": ("", " if c else p"),
}


def _nested(kind: str, depth: int) -> str:
    pre, post = WRAPPERS[kind]
    return "p.data -= " + pre * depth + "p.grad" + post * depth + "\n"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(WRAPPERS)), depth=st.sampled_from([1, 2, 10, 99, 150, 1200, 5000, 20_000]))
def test_deep_nesting_is_linted_or_refused_never_a_crash(kind, depth):
    src = _nested(kind, depth)
    res = lint_text(src, "deep.py", ALL)
    _check(res)
    if depth <= 99:  # shallow: a finding or nothing, never "could not parse"
        assert all(d.code != "DTL900" for d in res.diagnostics), (kind, depth, res.diagnostics)
    if depth >= 5000:
        assert [d.code for d in res.diagnostics] == ["DTL900"], (kind, depth)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    terms=st.integers(1, 600),
    item=st.sampled_from(["p.grad", "1", "'x'", "(p.grad, 1)", "p.grad * lr", "{1: p}"]),
    joiner=st.sampled_from([", ", ",\n    "]),
)
def test_long_flat_lines_parse(terms, item, joiner):
    src = "def f(p, lr):\n    p.data -= sum([" + joiner.join([item] * terms) + "])\n"
    res = lint_text(src, "long.py", ALL)
    _check(res)
    assert all(d.code != "DTL900" for d in res.diagnostics)


@FUZZ
@given(data=st.text(alphabet="()[]{}-+*~.,:;=@ \n\\'\"#pgrad_0", max_size=300))
def test_punctuation_soup_never_crashes(data):
    _check(lint_text("grad = 1\n" + data, "soup.py", ALL))


# ----------------------------------------------------------------------------- linear time

# Linear: linting the 8x bigger file once takes about as long as linting the small one 8 times
# (ratio ~1); quadratic would be ~8. Both sides are timed as one block of similar length, so
# timer noise and warm-up hit them alike.
MARGIN = 3.0


def _seconds(src: str, reps: int) -> float:
    """Best of 2. The cyclic GC is off while timing: its passes cost in proportion to the
    test process's heap (torch, hypothesis), not to the file."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            for _ in range(reps):
                res = lint_text(src, "ladder.py", Settings())  # with the pre-filter: each has a gradient
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.enable()
    _check(res)
    return best


# family: (source of size n, base n); the ladder is n, 8n (both sides of the size limits
# the engine uses to pick a thread or a child process are kept apart)
LADDERS = {
    # the hangs, as families: refused (too deep) in time linear in their length
    "plus_chain": (lambda n: "p.data -= " + " + ".join(["p.grad"] * n) + "\n", 2000),
    "attr_chain": (lambda n: "p.data -= p.grad" + ".x" * n + "\n", 2000),
    "subscript_chain": (lambda n: "p.data -= p.grad" + "[0]" * n + "\n", 2000),
    "call_chain": (lambda n: "p.data -= p.grad" + "()" * n + "\n", 2000),
    "pow_chain": (lambda n: "p.data -= " + "**".join(["p.grad"] * n) + "\n", 2000),
    "and_chain": (lambda n: "p.data -= " + " and ".join(["p.grad"] * n) + "\n", 2000),
    "unary": (lambda n: "p.data -= " + "-" * n + "p.grad\n", 2000),
    "ones_line": (lambda n: "grad = 1\nx = " + "+".join(["1"] * (20 * n)) + "\n", 1000),
    # long words (the pre-filter regex was quadratic there) and long flat lines
    "string_literal": (lambda n: "grad = 1\nx = '" + "a" * (100 * n) + "'\n", 1000),
    "identifier": (lambda n: "grad = 1\nx_" + "a" * (100 * n) + " = 1\n", 1000),
    "flat_list": (lambda n: "p.data -= sum([" + ", ".join(["p.grad * 2"] * n) + "])\n", 125),
    # ordinary code, more of it: findings, positions, suppression, helpers, loops, branches
    "statements": (lambda n: "def f(p, lr):\n" + "    p.data -= lr * p.grad\n" * (n // 20), 1000),
    "functions": (lambda n: "import torch\n" + "".join(
        f"def f{i}(p, g):\n    p.data -= g\n    return f{max(i - 1, 0)}(p, p.grad)\n\n" for i in range(n // 40)), 1000),
    "loops": (lambda n: "def step(params, lr):\n" + "".join(
        f"    for p{i} in params:\n        g{i} = p{i}.grad\n        p{i}.data.add_(g{i}, alpha=-lr)\n"
        for i in range(n // 40)), 1000),
    "branches": (lambda n: "def step(p, lr, c):\n    g = p.grad\n" + "".join(
        f"    if c == {i}:\n        g = g * 2\n    else:\n        g = g + 1\n" for i in range(n // 40))
        + "    p.data -= g\n", 1000),
    # tests of distinct names: none correlates, and looking for a partner stays bounded
    "distinct_tests": (lambda n: "def step(p, lr):\n    g = p.grad\n" + "".join(
        f"    if c{i} == {i}:\n        g = g * 2\n" for i in range(n // 40)) + "    p.data -= g\n", 1000),
}


@pytest.mark.parametrize("family", sorted(LADDERS))
def test_lint_time_is_linear_in_file_size(family):
    make, n = LADDERS[family]
    small8, big = _seconds(make(n), 8), _seconds(make(8 * n), 1)
    assert big < MARGIN * small8, (family, small8, big)


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["plus", "subscript", "lambda"])
def test_many_chains_under_the_depth_limit_cost_linear_time(chain):
    # each chain is as long as the limit allows (quadratic in libcst, so bounded); more of them
    one = {"plus": "x = " + " + ".join(["p.grad"] * 400) + "\n",
           "subscript": "x = p.grad" + "[0]" * 400 + "\n",
           "lambda": "x = " + "lambda: " * 400 + "p.grad\n"}[chain]
    assert check_structure(one)[2] <= MAX_DEPTH
    small8, big = _seconds("grad = 1\n" + one * 2, 8), _seconds("grad = 1\n" + one * 16, 1)
    assert big < MARGIN * small8, (chain, small8, big)
