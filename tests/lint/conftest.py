from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def _command() -> list[str]:
    exe = shutil.which("dualtype-lint", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:  # a missing entry point is a packaging bug, not a reason to skip
        pytest.fail("the dualtype-lint console script is not installed: check "
                    "[project.scripts] in pyproject.toml and run `pip install -e .`")
    return [exe]


@pytest.fixture(scope="session")
def lint_cmd() -> list[str]:
    return _command()


@pytest.fixture
def run_lint(lint_cmd):
    """Run the installed command; returns CompletedProcess with text stdout/stderr."""

    def run(*args: str, cwd: Path | str | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 120):
        full_env = dict(os.environ)
        full_env.pop("PYTHONPATH", None)
        if env:
            full_env.update(env)
        return subprocess.run(
            [*lint_cmd, *args],
            cwd=cwd,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """The same CLI in-process (``dualtype_lint.cli.main``): fast, for option variations.
    The contract itself (exit codes, formats, config, noqa, errors, fixes) is also checked
    through the installed command with ``run_lint``."""
    from dualtype_lint.cli import main

    def run(*args: str, cwd: Path | str | None = None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        out = capsys.readouterr()
        return _Result(code, out.out, out.err)

    return run
