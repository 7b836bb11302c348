"""Fixes must give code that runs: apply ``--fix --unsafe-fixes`` and execute the result on a
small model, typed and untyped; never dualize denominators, scalars or copies; no fix where it
cannot run (another framework, ``dualize`` and ``dualtype`` both taken)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_text

FIXTURES = Path(__file__).parent / "fixtures"
FIX = Settings(fix=True, unsafe_fixes=True)


def fixed(src: str) -> str | None:
    res = lint_text(src, "m.py", FIX)
    assert not res.internal_error, res.diagnostics
    return res.new_text


@pytest.mark.parametrize("case", ["fix_typed", "fix_untyped"])
def test_fixed_fixture_runs_and_is_clean(case: str) -> None:
    torch = pytest.importorskip("torch")
    src = (FIXTURES / case / "input.py").read_text()
    new = fixed(src)
    assert new is not None and new != src
    assert lint_text(new, "m.py", Settings()).diagnostics == []  # nothing left to report
    ns: dict = {"__name__": "fixed"}
    exec(compile(new, f"{case}/fixed.py", "exec"), ns)
    model = ns["make"]()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    bufs: dict = {}
    losses = [ns["step"](model, x, y, 0.01, bufs) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    after = list(model.parameters())
    assert all(not torch.equal(b, a.detach()) for b, a in zip(before, after))
    if case == "fix_untyped":
        assert 'dualize(buf, "l2")' in new and 'dualize(p.grad, "l2")' in new
    else:
        assert "dualize(buf)" in new and "dualize(p.grad)" in new


def test_never_dualizes_denominators_scalars_or_copies() -> None:
    src = (
        "import torch\n"
        "def f(params, lr, grad_scale):\n"
        "    for p in params:\n"
        "        g = p.grad\n"
        "        p.add_(g / grad_scale, alpha=-lr)\n"  # the numerator only
        "        p.data.copy_(p.data - lr * g)\n"  # the gradient inside the copy, not the copy
        "        lr2, scale = g.norm(), 2.0\n"
        "        p.add_(g, alpha=-lr2 * scale)\n"  # a norm is a scalar: never wrapped
    )
    new = fixed(src)
    assert new is not None
    assert 'p.add_(dualize(g, "l2") / grad_scale, alpha=-lr)' in new
    assert 'p.data.copy_(p.data - lr * dualize(g, "l2"))' in new
    assert 'p.add_(dualize(g, "l2"), alpha=-lr2 * scale)' in new
    assert "dualize(grad_scale" not in new and "dualize(lr" not in new


def test_adam_and_master_copies_get_no_fix() -> None:
    src = (
        "import torch\n"
        "def f(p, exp_avg, exp_avg_sq, lr):\n"
        "    g = p.grad\n"
        "    exp_avg.lerp_(g, 0.1)\n"
        "    exp_avg_sq.lerp_(g * g, 0.01)\n"
        "    p.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(1e-8), value=-lr)\n"
        "    p32 = p.float()\n"
        "    p32.add_(exp_avg.sign(), alpha=-lr)\n"
        "    p.copy_(p32)\n"
    )
    res = lint_text(src, "m.py", Settings())
    assert [d.code for d in res.diagnostics] == ["DTL006"]
    assert fixed(src) is None


def test_no_fix_in_another_framework() -> None:
    src = "import mxnet as mx\ndef f(p, lr):\n    p.data -= lr * p.grad\n"
    res = lint_text(src, "m.py", Settings())
    assert [d.code for d in res.diagnostics] == ["DTL001"] and not res.diagnostics[0].fixable
    assert fixed(src) is None


def test_shadowed_dualize_uses_the_module_or_no_fix() -> None:
    src = "import torch\ndef dualize(x):\n    return x\ndef f(p, lr):\n    p.data -= lr * p.grad\n"
    new = fixed(src)
    assert new is not None and "import dualtype\n" in new
    assert 'p.data -= lr * dualtype.dualize(p.grad, "l2")' in new
    both = "import torch\ndualize = dualtype = None\ndef f(p, lr):\n    p.data -= lr * p.grad\n"
    assert fixed(both) is None


def test_muon_like_code_gets_dualizer_advice_and_no_fix() -> None:
    src = (
        "import torch\n"
        "from mylib import newton\n"
        "def step(params, lr, bufs):\n"
        "    for p, buf in zip(params, bufs):\n"
        "        buf.lerp_(p.grad, 0.1)\n"
        "        update = newton(buf)\n"
        "        p.add_(update, alpha=-lr)\n"
    )
    (d,) = lint_text(src, "m.py", Settings()).diagnostics
    assert "--dualizer newton" in d.message and "# noqa: DTL002" in d.message and not d.fixable
    assert fixed(src) is None
    clean = lint_text(src, "m.py", Settings(dualizers=("newton",))).diagnostics
    assert clean == []
