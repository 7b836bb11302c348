"""analysis.branches: which tests decide which, and that the split walk stays bounded."""

from __future__ import annotations

import libcst as cst
import pytest

from dualtype_lint.analysis import branches
from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text


def _t(src: str):
    return branches.simple_test(cst.parse_expression(src))


def test_simple_tests():
    assert _t("n == 0") == ("n", "==", 0.0)
    assert _t("0 < n") == ("n", ">", 0.0)
    assert _t("n >= -1.5") == ("n", ">=", -1.5)
    assert _t("buf is None") == ("buf", "is", None)
    assert _t("buf is not None") == ("buf", "is not", None)
    for other in ("n == m", "n.x == 0", "0 < n < 3", "n in (0, 1)", "n", "not n", "n is 0"):
        assert _t(other) is None, other


@pytest.mark.parametrize(
    "first, taken, second, expected",
    [
        ("n == 0", True, "n > 0", (False, True)),
        ("n == 0", False, "n > 0", (True, True)),  # n may be negative
        ("n == 0", False, "n != 0", (True, False)),
        ("n > 0", True, "n < 1", (True, True)),  # 0.5: floats are not excluded
        ("n >= 2", False, "2 <= n", (False, True)),
        ("n < 5", True, "n == 5", (False, True)),
        ("b is None", True, "b is not None", (False, True)),
        ("b is None", False, "b is not None", (True, False)),
        ("b is None", False, "b == 0", (True, True)),
    ],
)
def test_feasible(first, taken, second, expected):
    assert branches.feasible(_t(first), taken, _t(second)) == expected


def test_nested_splits_are_bounded():
    """Eleven nested correlated pairs would be 2**11 walks of the innermost block; splits
    stop after MAX_NESTED levels, and the raw branch still joins in beyond them."""
    depth = 11
    lines = ["def f(p, lr, zeropower_via_newtonschulz5):", "    g = p.grad"]
    for k in range(depth):
        ind = "    " * (k + 1)
        lines += [f"{ind}if n{k} == 0:", f"{ind}    u = g", f"{ind}else:", f"{ind}    u = zeropower_via_newtonschulz5(g)"]
        lines += [f"{ind}while True:"]
    ind = "    " * (depth + 1)
    lines += [f"{ind}p.add_(u, alpha=-lr)"]
    for k in reversed(range(depth)):
        ind = "    " * (k + 1)
        lines += [f"{ind}if n{k} > 0:", f"{ind}    p.add_(u, alpha=-lr)"]
    res = lint_text("\n".join(lines) + "\n", "m.py", Settings(timeout=20))
    assert not res.internal_error, res.diagnostics
    assert res.diagnostics  # the innermost update sees the raw branch
