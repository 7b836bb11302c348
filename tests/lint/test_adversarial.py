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


def test_add_noqa_on_a_backslash_continued_line_keeps_the_file_valid(run_lint, cli, tmp_path):
    src = "def step(p, lr):\n    p.data -= lr * \\\n        p.grad\n    p.data -= p.grad + \\\n        1\n"
    (tmp_path / "m.py").write_text(src)
    r = run_lint("--add-noqa", "m.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    new = (tmp_path / "m.py").read_text()
    compile(new, "m.py", "exec")  # was: `lr * \  # noqa: DTL001`, a SyntaxError
    assert new.count("# noqa: DTL001") == 2
    assert "p.grad  # noqa: DTL001\n" in new and "1  # noqa: DTL001\n" in new
    r = cli("m.py", cwd=tmp_path)  # the noqa at the end of the continuation applies
    assert r.returncode == 0, r.stdout


def test_add_noqa_counts_lines_as_python_does(cli, tmp_path):
    # str.splitlines() splits at a form feed: every noqa after one landed a line too early
    src = "import os\n\x0c\ndef step(p, lr):\n    p.data -= lr * p.grad\n"
    (tmp_path / "m.py").write_text(src)
    assert cli("--add-noqa", "m.py", cwd=tmp_path).returncode == 0
    assert (tmp_path / "m.py").read_text().splitlines()[-1].endswith("p.grad  # noqa: DTL001")
    assert cli("m.py", cwd=tmp_path).returncode == 0


def test_fix_on_stdin_prints_the_fixed_source(run_lint):
    r = run_lint("--fix", "--unsafe-fixes", "-", input="import torch\n" + BAD)
    assert r.returncode == 0, r.stderr
    assert "dualize(p.grad" in r.stdout and "import torch\n" in r.stdout
    compile(r.stdout, "-", "exec")
    assert "1 fixed" in r.stderr  # the summary is not mixed into the source


def test_fix_on_stdin_without_a_fix_echoes_the_input(run_lint):
    src = "x = 1  # nothing to fix\n"
    r = run_lint("--fix", "--unsafe-fixes", "-", input=src)
    assert r.returncode == 0 and r.stdout == src


@pytest.mark.parametrize(
    "before",
    [
        "import torch\rdef step(p, lr):\r    p.data -= lr * p.grad\r",  # CR-only: libcst drops the last \r
        "\x0cimport torch\ndef step(p, lr):\n    p.data -= lr * p.grad\n",  # and a leading form feed
    ],
    ids=["cr-only", "form-feed"],
)
def test_fix_changes_nothing_but_the_fix(cli, tmp_path, before):
    (tmp_path / "m.py").write_bytes(before.encode())
    r = cli("--fix", "--unsafe-fixes", "m.py", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    after = (tmp_path / "m.py").read_bytes().decode()
    assert "dualize(p.grad" in after
    compile(after, "m.py", "exec")
    # every line of the input is still there, with its own line ending, in order
    kept = iter(after.splitlines(keepends=True))
    for line in before.splitlines(keepends=True):
        line = line.replace("p.grad", "")
        assert any(line.split("lr *")[0] in got and got.endswith(line[-1]) for got in kept), line
    assert after[0] == before[0] and after[-1] == before[-1]  # the form feed, the last \r
    assert ("\n" in after) == ("\n" in before)  # no newline style mixed in


def test_closed_stdin_is_a_diagnostic_not_an_internal_error(lint_cmd):
    r = subprocess.run([*lint_cmd, "-"], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert "internal error" not in r.stderr
    assert r.returncode == 1 and "DTL901" in r.stdout and "closed" in r.stdout


# ----------------------------------------------------------------------------- crashes and hangs

# Each of these segfaulted the linting process (rc 139) or took more than 60 s.
HOSTILE = {
    "unary": "x = " + "-" * 10_000 + "p.grad\n",
    "and_chain": "p.data -= " + " and ".join(["p.grad"] * 20_000) + "\n",
    "elif_chain": "def f(p):\n    if p: pass\n" + "    elif p: p.data -= p.grad\n" * 12_000,
    "plus_chain": "p.data -= " + " + ".join(["p.grad"] * 5000) + "\n",
    "attr_chain": "p.data -= p.grad" + ".x" * 20_000 + "\n",
    "subscript_chain": "p.data -= p.grad" + "[0]" * 20_000 + "\n",
    "call_chain": "p.data -= p.grad" + "()" * 20_000 + "\n",
    "pow_chain": "p.data -= " + "**".join(["p.grad"] * 5000) + "\n",
    "ones": "grad = 1\nx = " + "+".join(["1"] * 200_000) + "\n",
}


def test_hostile_files_are_dtl900_serially_and_the_run_goes_on(run_lint, tmp_path):
    for name, text in HOSTILE.items():
        (tmp_path / f"a_{name}.py").write_text(text)
    (tmp_path / "b_bad.py").write_text(BAD)
    r = run_lint("-j", "1", ".", cwd=tmp_path, timeout=120)  # <= 16 files: linted in this process
    assert r.returncode == 1, (r.returncode, r.stderr[-500:])  # not -11 (SIGSEGV), not 2
    for name in HOSTILE:
        assert f"a_{name}.py:1:1: DTL900" in r.stdout, name
    assert "b_bad.py:2:" in r.stdout  # and the file after them is still linted


def test_hostile_stdin_is_a_diagnostic(run_lint):
    r = run_lint("-", input=HOSTILE["unary"], timeout=60)
    assert r.returncode == 1 and "-:1:1: DTL900" in r.stdout, (r.returncode, r.stderr[-500:])


@pytest.mark.parametrize(
    "text",
    [
        "grad = 1\nx = '" + "a" * 1_000_000 + "'\n",  # the pre-filter regex was quadratic here
        "grad = 1\nx = " + "1" * 100_000 + "\n",
    ],
    ids=["1MB-string", "100k-digits"],
)
def test_long_words_lint_quickly(text):
    from dualtype_lint.engine import might_have_findings

    assert might_have_findings(text)  # `grad` is there; before, finding it took minutes
    assert not might_have_findings(text.replace("grad = 1\n", "x = 2\n"))


def test_time_budget_reports_dtl902_and_moves_on(tmp_path):
    from dualtype_lint.config import Settings
    from dualtype_lint.runner import run

    # ~1-3 s of work each (chains under the depth limit); a budget 20x smaller. The first is
    # deep enough to be parsed in a child process (killed), the second in a thread (stopped).
    (tmp_path / "a_slow_child.py").write_text("p.data -= " + " + ".join(["p.grad"] * 900) + "\n")
    (tmp_path / "a_slow_thread.py").write_text(("p.data -= " + " + ".join(["p.grad"] * 90) + "\n") * 31)
    (tmp_path / "b_bad.py").write_text(BAD)
    files = [str(tmp_path / n) for n in ("a_slow_child.py", "a_slow_thread.py", "b_bad.py")]
    results = run(files, Settings(timeout=0.05), jobs=1)
    codes = [[(d.code, d.line) for d in r.diagnostics] for r in results]
    assert codes == [[("DTL902", 1)], [("DTL902", 1)], [("DTL001", 2)]]
    assert "gave up after 0.05 s" in results[0].diagnostics[0].message
    assert results[0].internal_error and not results[2].internal_error


def test_no_time_budget_with_timeout_0():
    from dualtype_lint.config import Settings
    from dualtype_lint.engine import lint_text

    res = lint_text("p.data -= " + " + ".join(["p.grad"] * 300) + "\n", "m.py", Settings(timeout=0))
    assert [d.code for d in res.diagnostics] == ["DTL001"]


# ----------------------------------------------------------------------------- limits


def test_a_crash_in_the_child_is_reported_not_inherited():
    import signal

    from dualtype_lint.limits import Crashed, run_bounded

    with pytest.raises(Crashed, match="signal 9"):  # as a segfault would, without a core dump
        run_bounded(lambda: os.kill(os.getpid(), signal.SIGKILL), 30, isolate=True)
    with pytest.raises(Crashed, match="ZeroDivisionError"):
        run_bounded(lambda: 1 / 0, 30, isolate=True)
    assert run_bounded(lambda: {"a": [1]}, 30, isolate=True) == {"a": [1]}


def test_errors_in_the_thread_reach_the_caller():
    from dualtype_lint.limits import run_bounded

    with pytest.raises(ZeroDivisionError):
        run_bounded(lambda: 1 / 0, 30, isolate=False)
    assert run_bounded(lambda: 42, 0, isolate=False) == 42


def test_the_file_thread_is_reused_unless_it_overran():
    import threading

    from dualtype_lint.limits import OverBudget, run_bounded

    first = run_bounded(threading.current_thread, 30, isolate=False)
    assert first is not threading.main_thread()
    assert run_bounded(threading.current_thread, 30, isolate=False) is first
    with pytest.raises(OverBudget):  # runs in the same thread, endless, in Python
        run_bounded(lambda: [0 for _ in iter(int, 1)], 0.2, isolate=False)
    first.join(10)
    assert not first.is_alive()  # told to stop, and it did
    assert run_bounded(threading.current_thread, 30, isolate=False) is not first


def test_depth_counts_and_chains_as_libcst_nests_them():
    from dualtype_lint.limits import MAX_DEPTH, check_structure

    assert check_structure("x = " + " and ".join(["p"] * (MAX_DEPTH + 10)) + "\n")[0] == "deep"
    assert check_structure("x = " + " and ".join(["p"] * 50) + "\n")[0] == "ok"
    assert check_structure("x = [" + ", ".join(["p"] * 50_000) + "]\n")[0] == "ok"  # flat is fine
    kind, (line, col, msg), _ = check_structure("x = (\n")
    assert kind == "syntax" and line == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX rlimits")
def test_a_small_address_space_falls_back_to_the_default_thread_stack(tmp_path):
    import sys

    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))\n"  # < the 512 MB stack
        "from dualtype_lint.config import Settings\n"
        "from dualtype_lint.engine import lint_text\n"
        f"print([d.code for d in lint_text({BAD!r}, 'm.py', Settings()).diagnostics])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "['DTL001']", r.stderr[-2000:]


def test_a_hostile_imported_helper_is_not_parsed_for_summaries(tmp_path):
    from dualtype_lint.config import Settings
    from dualtype_lint.engine import lint_path

    # the helper is read to summarize `scale`; its 20k-link chain would take libcst minutes
    # (or, as 20k unary operators, crash it) on the main file's time budget
    (tmp_path / "helpers.py").write_text(
        "def scale(p, g):\n    p.data -= g\n\nX = p" + ".x" * 20_000 + "\nY = " + "-" * 20_000 + "1\n"
    )
    (tmp_path / "main.py").write_text(
        "import torch\nfrom helpers import scale\n\ndef step(p):\n    scale(p, p.grad)\n    p.data -= p.grad\n"
    )
    res = lint_path(str(tmp_path / "main.py"), Settings(timeout=10))
    assert not res.internal_error, res.diagnostics
    assert ("DTL001", 6) in [(d.code, d.line) for d in res.diagnostics]
