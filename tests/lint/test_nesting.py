"""The nesting bound read from the text (dualtype_lint.nesting) that lets ordinary files skip
CPython's parse: it must never be below the depth measured on CPython's tree, which decides
whether libcst may see a file at all.

Properties: on generated Python, on constructions that nest without brackets (lambdas, elif
chains, boolean chains, conditional expressions, blocks), on the standard library, the bound is
None or at least the measured depth; text it cannot read as the tokenizer does gives None.
"""

from __future__ import annotations

import ast
import pathlib
import warnings

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text
from dualtype_lint.limits import check_structure
from dualtype_lint.nesting import depth_bound


def _depth(src: str) -> int:
    kind, loc, depth = check_structure(src)
    assert kind == "ok", (kind, loc, src[:300])
    return depth


def _assert_bounded(src: str) -> None:
    bound = depth_bound(src)
    assert bound is not None, src[:300]
    assert bound >= _depth(src), (bound, _depth(src), src[:300])


# ----------------------------------------------------------------------------- generated code

ATOMS = st.sampled_from(["p", "g", "lr", "1", "2.5e-3", "'s'", "None", "...", "f'{p}'", 'f"{p!r:>{w}}"', "b'x'"])


def _extend(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    two = st.tuples(e, e)
    return st.one_of(
        st.tuples(e, st.sampled_from(["+", "*", "**", "@", "<", "==", "is not", "not in", "and", "or"]), e)
        .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),  # unbracketed: precedence decides the nesting
        e.map(lambda x: f"({x})"),
        st.tuples(st.sampled_from(["-", "~", "not ", "await "]), e).map(lambda t: f"{t[0]}{t[1]}"),
        e.map(lambda x: f"({x}).a.b"),
        two.map(lambda t: f"({t[0]})[{t[1]}]"),
        two.map(lambda t: f"p[{t[0]}:{t[1]}, ::2]"),
        st.tuples(e, st.lists(e, max_size=3)).map(lambda t: f"f({t[0]})({', '.join(t[1])})"),
        two.map(lambda t: f"f(k={t[0]}, *{t[1]}, **d)"),
        st.tuples(e, e, e).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        st.tuples(e, e).map(lambda t: f"[{t[0]}, *{t[1]}]"),
        two.map(lambda t: f"{{{t[0]}: {t[1]}, **d}}"),
        two.map(lambda t: f"lambda a, b={t[0]}, *c: {t[1]}"),
        e.map(lambda x: f"lambda: {x}"),
        two.map(lambda t: f"[{t[0]} for a, b in {t[1]} if a or b]"),
        two.map(lambda t: f"{{a: {t[0]} for a in {t[1]}}}"),
        e.map(lambda x: f"(y := {x})"),
        e.map(lambda x: f"f'{{{x}}} and {{p:>{{w}}}}'"),
        e.map(lambda x: f"(yield {x})"),
    )


EXPRS = st.recursive(ATOMS, _extend, max_leaves=20)

STATEMENTS = [
    "x = {e}",
    "x, *y = z = {e}",
    "x: int = {e}",
    "x += {e}",
    "assert {e}, {e}",
    "if {e}: x = {e}",
    "if {e}:\n    pass\nelif {e}:\n    x = {e}\nelse:\n    pass",
    "try:\n    pass\nexcept E as err:\n    x = {e}",
    "for a, b in {e}:\n    x = {e}",
    "async with {e} as c, d:\n    x = {e}",
    "@f({e})\ndef g(a: int = {e}, *b, c=1, **d) -> {e}:\n    return {e}",
    "match {e}:\n    case [1, {{'k': v}}, *r] if {e}:\n        x = {e}\n    case A(b=2) | None:\n        pass",
    "x = {e}; y = {e}",
    "x = {e} + \\\n    {e}",
]


def _indent(block: str, level: int) -> str:
    return "".join(("    " * level + line if line.strip() else line) for line in block.splitlines(True))


@st.composite
def modules(draw) -> str:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        template = draw(st.sampled_from(STATEMENTS))
        stmt = template.replace("{e}", "\x00").split("\x00")
        body = stmt[0] + "".join(draw(EXPRS) + rest for rest in stmt[1:])
        out.append(_indent(body, draw(st.integers(0, 3))))
    # every statement goes inside as many blocks as its indentation asks for
    lines = []
    for block in out:
        level = (len(block) - len(block.lstrip(" "))) // 4
        lines.append("".join(_indent(f"if c:\n", i) for i in range(level)) + block.rstrip("\n") + "\n")
    return "async def h():\n" + _indent("".join(lines), 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(src=modules())
def test_the_bound_is_never_below_the_depth_of_generated_code(src):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        try:
            ast.parse(src)
        except SyntaxError:  # e.g. yield inside a comprehension, await in a lambda
            assume(False)
        _assert_bounded(src)


# ----------------------------------------------------------------------------- families

# each makes its depth grow with n without brackets, or with brackets and separators mixed
FAMILIES = {
    "lambda_params": lambda n: "x = " + "lambda a, b=1: " * n + "p\n",
    "lambda_nested": lambda n: "x = " + "lambda a: " * n + "p or q and r\n",
    "elif_chain": lambda n: "if a:\n    pass\n" + "elif a:\n    pass\n" * n + "else:\n    x = (((p)))\n",
    "ifexp_and": lambda n: "x = " + "a if p and q else " * n + "p\n",
    "ifexp_orelse": lambda n: "x = " + "a or b if p else " * n + "p\n",
    "and_chain": lambda n: "x = " + " and ".join(["p.a.b"] * n) + "\n",
    "and_or_not": lambda n: "x = " + " or ".join(["not a and b == c"] * n) + "\n",
    "starred_or": lambda n: "f(" + "*a or f(" * n + "p" + ")" * n + ")\n",
    "walrus_or": lambda n: "x = " + "(y := a or " * n + "p" + ")" * n + "\n",
    "comprehension_or": lambda n: "x = " + "[a for a in b or " * n + "p" + "]" * n + "\n",
    "keyword": lambda n: "x = " + "f(k=" * n + "p" + ")" * n + "\n",
    "dict": lambda n: "x = " + "{a: " * n + "p" + "}" * n + "\n",
    "slices": lambda n: "x = " + "a[1:2, " * n + "p" + "]" * n + "\n",
    "calls": lambda n: "x = p" + "()" * n + "\n",
    "blocks": lambda n: "".join("    " * i + "try:\n" for i in range(n)) + "    " * n + "pass\n"
    + "".join("    " * i + "except E:\n" + "    " * (i + 1) + "x = p\n" for i in reversed(range(n))),
    "tab_blocks": lambda n: "".join("\t" * i + "with a or b as c:\n" for i in range(n)) + "\t" * n + "x = p\n",
    "fstring_fields": lambda n: "x = f'{" + "f(" * n + "p" + ")" * n + "!r:>{w}}'\n",
    "continuation": lambda n: "x = p" + " + \\\n    p" * n + "\n",
    "cr_lines": lambda n: "if a:\r" + "".join(" " * (i + 1) + "if a:\r" for i in range(n)) + " " * (n + 1) + "x = p\r",
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("n", [1, 2, 5, 20, 60])
def test_the_bound_is_never_below_the_depth_of_a_family(family, n):
    _assert_bounded(FAMILIES[family](n))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_limit_stops_the_work_only_above_it(family):
    src = FAMILIES[family](20)
    bound = depth_bound(src)
    assert depth_bound(src, bound) == bound
    assert depth_bound(src, bound - 1) is None


def test_the_bound_is_never_below_the_depth_of_standard_library_modules():
    root = pathlib.Path(ast.__file__).parent
    checked = 0
    for path in sorted(root.glob("*.py"))[::3]:
        src = path.read_text(encoding="utf-8", errors="replace")
        if check_structure(src)[0] != "ok":
            continue
        bound = depth_bound(src)
        assert bound is None or bound >= check_structure(src)[2], path
        checked += bound is not None
    assert checked > 30


# ----------------------------------------------------------------------------- no bound


@pytest.mark.parametrize(
    "src",
    [
        "x = 'abc\ny = 1\n",  # a string left open: the rest is not read as code
        "x = (1]\n",
        "x = (1\n",
        "x = 1)\n",
        "x = f(a; b)\n",
        "x = 1\0\n",
        'x = f"{p"\n',  # a field that does not close
        'x = f"{p["a"]}"\n',  # Python 3.12: the field holds the f-string's own quote
    ],
)
def test_text_not_read_as_the_tokenizer_reads_it_has_no_bound(src):
    assert depth_bound(src) is None


def test_ordinary_code_is_bounded_low_enough_to_skip_the_parse():
    from dualtype_lint.limits import HEAVY_DEPTH

    package = pathlib.Path(depth_bound.__code__.co_filename).parent
    for path in sorted(package.rglob("*.py")):  # the linter's own modules
        bound = depth_bound(path.read_text(encoding="utf-8"))
        assert bound is not None and bound <= HEAVY_DEPTH, (path, bound)


# ----------------------------------------------------------------------------- the engine


def test_a_syntax_error_on_the_fast_path_is_located_by_cpython():
    src = "import torch\n\ndef step(p):\n    p.data -= p.grad +\n"
    assert depth_bound(src) is not None  # the text alone does not see the error
    kind, (line, col, msg), _ = check_structure(src)
    diags = lint_text(src, "m.py", Settings(prefilter=False)).diagnostics
    assert [(d.code, d.line, d.col) for d in diags] == [("DTL900", line, col)]
    assert msg in diags[0].message


def test_deep_code_still_gets_the_full_check():
    src = "x = " + "(" * 150 + "p" + ")" * 150 + "\n"  # bound > 100: CPython measures it
    assert depth_bound(src) > 100
    assert [d.code for d in lint_text(src, "m.py", Settings(prefilter=False)).diagnostics] == []
