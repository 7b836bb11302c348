"""Hostile input (issue 13): patterns, files and streams built to crash or hang the linter.

Each test here failed before its fix: a segfault, a hang, an ``re.error``, a broken rewrite.
Timing is only ever compared between sizes (a ratio with a wide margin), never absolute.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dualtype_lint.files import IgnoreSet, discover
from dualtype_lint.wildmatch import GlobError, compile_glob

BAD = "def step(p, lr):\n    p.data -= lr * p.grad\n"


# ----------------------------------------------------------------------------- glob patterns


@pytest.mark.parametrize(
    "pattern, path, expected",
    [
        ("*.py", "a.py", True),
        ("*.py", "d/a.py", False),  # anchored use: '*' does not cross '/'
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("**/b", "b", True),
        ("**/b", "x/y/b", True),
        ("a/**", "a/x/y", True),
        ("a/**", "a", False),
        ("a**b", "axxb", True),  # not a whole component: an ordinary '*'
        ("a**b", "ax/xb", False),
        ("?.py", "a.py", True),
        ("?.py", "ab.py", False),
        ("[abc].py", "b.py", True),
        ("[!abc].py", "b.py", False),
        ("[^abc].py", "d.py", True),
        ("[]]", "]", True),  # ']' first in a class is literal
        ("[!]]", "a", True),
        ("[z-a]", "m", False),  # an empty range matches nothing (git), not re.error
        ("[a-c]x", "bx", True),
        ("[[:digit:]]x", "7x", True),
        ("[[:digit:]]x", "ax", False),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c", "a" * 60, False),
        ("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c", "a" * 60 + "c", True),
        ("x*", "x", True),
        ("*x*y*", "axbyc", True),
        ("*x*y*", "aybxc", False),
    ],
)
def test_glob_has_gits_semantics(pattern, path, expected):
    assert compile_glob(pattern).match(path) is expected


@pytest.mark.parametrize("pattern", ["[!]", "[\\]", "[abc", "a\\", "[[:nope:]]"])
def test_patterns_git_aborts_on_are_errors(pattern):
    with pytest.raises(GlobError):
        compile_glob(pattern)


def test_exponential_pattern_is_fast_enough_to_finish():
    # a regex translation backtracks 2**40 times here; the greedy matcher is O(n*m)
    g = compile_glob("*a" * 40 + "*c")
    assert not g.match("a" * 2000)


def test_trailing_spaces_and_escapes(tmp_path):
    s = IgnoreSet(tmp_path, ["keep\\ ", "trail   ", "\\#hash", "\\!bang"])
    assert s.match(tmp_path / "keep ", False) is True
    assert s.match(tmp_path / "trail", False) is True
    assert s.match(tmp_path / "#hash", False) is True
    assert s.match(tmp_path / "!bang", False) is True


@pytest.mark.parametrize("pattern", ["[z-a]", "[!]", "[]]", "[\\]", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c"])
def test_bad_or_hostile_exclude_patterns_do_not_end_the_run(cli, tmp_path, pattern):
    (tmp_path / ("a" * 40 + ".py")).write_text(BAD)
    r = cli(".", "--exclude", pattern, "-q", cwd=tmp_path)
    assert "internal error" not in r.stderr
    assert r.returncode == 1 and "DTL001" in r.stdout  # the file was still linted
    if pattern in ("[!]", "[\\]"):
        assert "warning" in r.stderr and "invalid pattern" in r.stderr


def test_binary_gitignore_is_read_not_fatal(cli, tmp_path):
    (tmp_path / ".gitignore").write_bytes(bytes(range(256)) + b"\n[\\]\n[z-a]\nskip.py\n")
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "skip.py").write_text(BAD)
    r = cli(".", "-q", cwd=tmp_path)
    assert "internal error" not in r.stderr
    assert r.returncode == 1 and "bad.py" in r.stdout and "skip.py" not in r.stdout


def test_discover_with_invalid_pattern_keeps_the_valid_ones(tmp_path, capsys):
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text("x = 1\n")
    files, missing = discover([str(tmp_path)], root=str(tmp_path), exclude=["[abc", "b.py"])
    assert [Path(f).name for f in files] == ["a.py", "c.py"] and not missing
    assert "[abc" in capsys.readouterr().err


# ----------------------------------------------------------------------------- rewrites and streams


def test_add_noqa_on_a_backslash_continued_line_keeps_the_file_valid(run_lint, tmp_path):
    src = "def step(p, lr):\n    p.data -= lr * \\\n        p.grad\n    p.data -= p.grad + \\\n        1\n"
    (tmp_path / "m.py").write_text(src)
    r = run_lint("--add-noqa", "m.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = (tmp_path / "m.py").read_text()
    compile(new, "m.py", "exec")  # was: `lr * \  # noqa: DTL001`, a SyntaxError
    assert new.count("# noqa: DTL001") == 2
    assert "p.grad  # noqa: DTL001\n" in new and "1  # noqa: DTL001\n" in new
    r = run_lint("m.py", cwd=tmp_path)  # the noqa at the end of the continuation applies
    assert r.returncode == 0, r.stdout


def test_add_noqa_counts_lines_as_python_does(run_lint, tmp_path):
    # str.splitlines() splits at a form feed: every noqa after one landed a line too early
    src = "import os\n\x0c\ndef step(p, lr):\n    p.data -= lr * p.grad\n"
    (tmp_path / "m.py").write_text(src)
    assert run_lint("--add-noqa", "m.py", cwd=tmp_path).returncode == 0
    assert (tmp_path / "m.py").read_text().splitlines()[-1].endswith("p.grad  # noqa: DTL001")
    assert run_lint("m.py", cwd=tmp_path).returncode == 0


def test_fix_on_stdin_prints_the_fixed_source(run_lint):
    r = run_lint("--fix", "--unsafe-fixes", "-", input=BAD)
    assert r.returncode == 0, r.stderr
    assert "dualize(p.grad)" in r.stdout and "from dualtype import dualize" in r.stdout
    compile(r.stdout, "-", "exec")
    assert "1 fixed" in r.stderr  # the summary is not mixed into the source


def test_fix_on_stdin_without_a_fix_echoes_the_input(run_lint):
    src = "x = 1  # nothing to fix\n"
    r = run_lint("--fix", "--unsafe-fixes", "-", input=src)
    assert r.returncode == 0 and r.stdout == src


@pytest.mark.parametrize(
    "before",
    [
        "def step(p, lr):\r    p.data -= lr * p.grad\r",  # CR-only: libcst drops the last \r
        "\x0cdef step(p, lr):\n    p.data -= lr * p.grad\n",  # libcst drops a leading form feed
    ],
)
def test_fix_changes_nothing_but_the_fix(cli, tmp_path, before):
    (tmp_path / "m.py").write_bytes(before.encode())
    r = cli("--fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    after = (tmp_path / "m.py").read_bytes().decode()
    nl = "\r" if "\r" in before else "\n"
    expected = before.replace("p.grad", "dualize(p.grad)")
    i = expected.index("def")
    expected = expected[:i] + "from dualtype import dualize" + nl + expected[i:]
    assert after == expected


def test_closed_stdin_is_a_diagnostic_not_an_internal_error(lint_cmd):
    r = subprocess.run([*lint_cmd, "-"], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert "internal error" not in r.stderr
    assert r.returncode == 1 and "DTL901" in r.stdout and "closed" in r.stdout
