"""The linter must run where torch is not installed: it never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_import_does_not_pull_in_torch():
    code = (
        "import sys; import dualtype_lint.cli, dualtype_lint.engine, dualtype_lint.runner, "
        "dualtype_lint.fix, dualtype_lint.output, dualtype_lint.flake8_plugin; "
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cli_runs_with_torch_unimportable(tmp_path, lint_cmd):
    poison = tmp_path / "poison"
    (poison / "torch").mkdir(parents=True)
    (poison / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    src = tmp_path / "work"
    src.mkdir()
    (src / "train.py").write_text(
        textwrap.dedent(
            """\
            import torch

            def step(w, lr):
                w -= lr * w.grad
            """
        )
    )
    # the poisoned torch really is what `import torch` finds
    env = dict(os.environ, PYTHONPATH=str(poison))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "not installed here" in check.stderr
    for args in ([*lint_cmd, "train.py"], [*lint_cmd, "train.py", "-j", "2"], [sys.executable, "-m", "dualtype_lint", "train.py"]):
        r = subprocess.run(args, cwd=src, env=env, capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert "train.py:4:5: DTL001" in r.stdout
        assert "Traceback" not in r.stderr
