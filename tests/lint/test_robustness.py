"""Never crash: broken input becomes diagnostics, real trees lint to completion.

The whole-tree runs (the Python standard library, the installed torch) take minutes and are
marked slow: ``pytest -m slow tests/lint/test_robustness.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_bytes, lint_text

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES = [(FIXTURES / c / "input.py").read_text() for c in ("dtl002", "dataflow", "not_flagged")]
NO_PREFILTER = Settings(prefilter=False)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    src=st.sampled_from(SOURCES),
    cut=st.integers(min_value=0, max_value=4000),
    junk=st.text(alphabet="()[]{}:=+-*/.,'\"\\ \n\tgrad_x0#@!", max_size=12),
)
def test_mutated_sources_never_crash(src, cut, junk):
    cut %= len(src) + 1
    res = lint_text(src[:cut] + junk + src[cut:], "m.py", NO_PREFILTER)
    assert not res.internal_error, res.diagnostics
    for d in res.diagnostics:
        assert d.line >= 1 and d.col >= 1


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    res = lint_bytes(b"grad = 1\n" + data, "b.py", NO_PREFILTER)
    assert not res.internal_error
    assert all(d.code in ("DTL900", "DTL901") or d.code.startswith("DTL00") for d in res.diagnostics)


def test_deep_nesting_is_a_diagnostic_not_a_crash(run_lint, tmp_path):
    # libcst's native parser segfaults on ~1500 nested brackets: run in a subprocess
    (tmp_path / "deep.py").write_text("grad = " + "(" * 3000 + "1" + ")" * 3000 + "\n")
    (tmp_path / "unclosed.py").write_text("grad = " + "[" * 3000 + "\n")
    (tmp_path / "strings.py").write_text("grad = '" + "(" * 300 + "'\nw -= w.grad\n")  # valid
    ifs = "".join("    " * (i + 1) + "if p:\n" for i in range(90))
    (tmp_path / "deepif.py").write_text("def f(p):\n" + ifs + "    " * 91 + "p -= p.grad\n")
    r = run_lint(".", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "deep.py:1:" in r.stdout and "unclosed.py:1:" in r.stdout
    assert r.stdout.count("DTL900") == 2
    assert "strings.py:2:1: DTL001" in r.stdout and "deepif.py:92:" in r.stdout


def _tree_run(run_lint, root: Path, tmp_path: Path) -> list[dict]:
    files = run_lint("--show-files", "--no-respect-gitignore", str(root)).stdout.split()
    assert len(files) > 100
    r = run_lint(str(root), "--no-prefilter", "--no-respect-gitignore", "-j", "2",
                 "--output-format", "json", "--exit-zero", cwd=tmp_path, timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    diags = json.loads(r.stdout)
    assert not [d for d in diags if d["code"] == "DTL902"]
    return diags


@pytest.mark.slow
def test_python_stdlib_lints_without_crashing(run_lint, tmp_path):
    diags = _tree_run(run_lint, Path(sysconfig.get_paths()["stdlib"]), tmp_path)
    # lib2to3's Python 2 test data and the deliberately broken test files are parse failures
    assert any(d["code"] == "DTL900" for d in diags)


@pytest.mark.slow
def test_installed_torch_lints_without_crashing(run_lint, tmp_path):
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        pytest.skip("torch is not installed")
    diags = _tree_run(run_lint, Path(spec.origin).parent, tmp_path)
    optim = [d for d in diags if "/torch/optim/" in d["filename"]]
    assert len(optim) >= 40  # torch's optimizers apply raw gradients
