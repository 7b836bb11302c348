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
    assert _t("n") == ("n", "truthy", 0.0)
    assert _t("not n") == ("n", "falsy", 0.0)
    assert _t("n.x == 0") == ("n.x", "==", 0.0)
    assert _t("group['rectify']") == ("group['rectify']", "truthy", 0.0)
    assert _t("not self.nesterov") == ("self.nesterov", "falsy", 0.0)
    assert _t("state['buf'] is None") == ("state['buf']", "is", None)
    for other in ("n == m", "0 < n < 3", "n in (0, 1)", "n is 0", "n.x.y", "g[0]", "f(n)", "a[b]"):
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
        ("f", True, "f", (True, False)),
        ("f", False, "not f", (True, False)),
        ("f", True, "f is None", (False, True)),  # None is falsy
        ("f is None", True, "f", (False, True)),
        ("f is None", False, "f", (True, True)),  # 0 is not None and falsy
        ("n > 0", True, "n", (True, False)),
        ("n >= 0", True, "not n", (True, True)),
    ],
)
def test_feasible(first, taken, second, expected):
    assert branches.feasible(_t(first), taken, _t(second)) == expected


_RECTIFY = """
def step(p, exp_avg, exp_avg_sq, lr, group):
    exp_avg.lerp_(p.grad, 0.1)
    exp_avg_sq.addcmul_(p.grad, p.grad)
    if {first}:
        u = p.clone()
        u.add_(exp_avg, alpha=-lr)
    else:
        u = exp_avg / exp_avg_sq.sqrt()
    {between}
    if {second}:
        p.add_(exp_avg, alpha=-lr)
    else:
        p.add_(u, alpha=-lr)
"""


@pytest.mark.parametrize(
    "first, between, second, codes",
    [
        # the else branch of the second test only sees u = m/√v
        ("group['rectify']", "pass", "group['rectify']", ["DTL002", "DTL006"]),
        ("self.rectify", "pass", "self.rectify", ["DTL002", "DTL006"]),
        ("not rectify", "pass", "not rectify", ["DTL002", "DTL006"]),
        # a write into the hyperparameters in between: the raw u of the first branch joins in
        ("group['rectify']", "group['rectify'] = False", "group['rectify']", ["DTL002", "DTL002"]),
        ("group['rectify']", "group, x = {}, 1", "group['rectify']", ["DTL002", "DTL002"]),
        ("self.rectify", "self.rectify = 0", "self.rectify", ["DTL002", "DTL002"]),
        ("group['rectify']", "pass", "group['amsgrad']", ["DTL002", "DTL002"]),  # another key
    ],
)
def test_members_and_truth_tests_are_correlated(first, between, second, codes):
    """A copy of the weight that is never written back is scratch space (``u = p.clone()``):
    the raw momentum written into it is a buffer, reported where ``u`` reaches ``p``."""
    src = _RECTIFY.format(first=first, between=between, second=second)
    res = lint_text(src, "m.py", Settings())
    assert [d.code for d in res.diagnostics] == codes, src


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
