"""The pre-commit hook definition is well-formed and calls the real command."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_pre_commit_hooks(run_lint, tmp_path):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    ids = {h["id"] for h in hooks}
    assert ids == {"dualtype-lint", "dualtype-lint-system"}
    for h in hooks:
        assert h["entry"].split()[0] == "dualtype-lint"
        assert set(h["types_or"]) == {"python", "pyi"} and h["require_serial"] is True
    # pre-commit appends file names to the entry's arguments: that must be a valid call
    (tmp_path / "a.py").write_text("def f(w):\n    w -= w.grad\n")
    args = hooks[0]["entry"].split()[1:]
    r = run_lint(*args, "a.py", cwd=tmp_path)
    assert r.returncode == 1 and "a.py:2:5: DTL001" in r.stdout
