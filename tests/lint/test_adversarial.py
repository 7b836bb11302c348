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
