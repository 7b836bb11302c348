"""The installed ``dualtype-lint`` command, run in a subprocess: the CI contract."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BAD = textwrap.dedent(
    """\
    import torch


    def step(model, lr):
        for p in model.parameters():
            p.data -= lr * p.grad
            p.data.add_(p.grad, alpha=-lr)
    """
)
CLEAN = textwrap.dedent(
    """\
    import torch
    from dualtype import dualize


    def step(model, lr):
        for p in model.parameters():
            p.data -= lr * dualize(p.grad)
    """
)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    return root


def positions_text(stdout: str) -> list[tuple[str, int, int, str]]:
    out = []
    for line in stdout.splitlines():
        parts = line.split(":", 3)
        if len(parts) == 4 and parts[1].isdigit():
            out.append((parts[0], int(parts[1]), int(parts[2]), parts[3].split()[0]))
    return out


# ----------------------------------------------------------------------------- exit codes


def test_exit_0_when_clean(run_lint, tmp_path):
    write(tmp_path, {"ok.py": CLEAN})
    r = run_lint("ok.py", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All checks passed" in r.stdout


def test_exit_1_on_findings_with_positions(run_lint, tmp_path):
    write(tmp_path, {"bad.py": BAD})
    r = run_lint("bad.py", cwd=tmp_path)
    assert r.returncode == 1
    assert positions_text(r.stdout) == [("bad.py", 6, 9, "DTL001"), ("bad.py", 7, 9, "DTL002")]
    assert "Found 2 errors." in r.stdout


def test_exit_zero_flag(run_lint, tmp_path):
    write(tmp_path, {"bad.py": BAD})
    r = run_lint("bad.py", "--exit-zero", cwd=tmp_path)
    assert r.returncode == 0 and "DTL001" in r.stdout


@pytest.mark.parametrize(
    "args",
    [["--select", "XYZ123"], ["--output-format", "xml"], ["--jobs", "-3"], ["does-not-exist.py"]],
)
def test_exit_2_on_usage_errors(cli, tmp_path, args):
    write(tmp_path, {"bad.py": BAD})
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr


def test_exit_2_on_bad_config(run_lint, cli, tmp_path):
    write(tmp_path, {"pyproject.toml": '[tool.dualtype-lint]\nselekt = ["DTL"]\n', "bad.py": BAD})
    r = run_lint(".", cwd=tmp_path)
    assert r.returncode == 2 and "selekt" in r.stderr
    write(tmp_path, {"pyproject.toml": "[tool.dualtype-lint\n"})
    r = cli(".", cwd=tmp_path)
    assert r.returncode == 2 and "TOML" in r.stderr


def test_python_dash_m(tmp_path):
    write(tmp_path, {"bad.py": BAD})
    r = subprocess.run(
        [sys.executable, "-m", "dualtype_lint", "bad.py", "-q"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 1 and r.stdout.count("DTL00") == 2


# ----------------------------------------------------------------------------- formats


def test_all_formats_report_identical_positions(run_lint, tmp_path):
    fixtures = Path(__file__).parent / "fixtures"
    for case in ("dtl001", "dtl002", "dtl005", "syntax"):
        src = fixtures / case / "input.py"
        (tmp_path / f"{case}.py").write_text((src if src.is_file() else src.with_suffix(".txt")).read_text())
    text = run_lint(".", "-q", cwd=tmp_path)
    js = run_lint(".", "--output-format", "json", cwd=tmp_path)
    gh = run_lint(".", "--output-format", "github", cwd=tmp_path)
    sarif = run_lint(".", "--output-format", "sarif", cwd=tmp_path)
    assert {text.returncode, js.returncode, gh.returncode, sarif.returncode} == {1}

    from_text = positions_text(text.stdout)
    from_json = [(d["filename"], d["location"]["row"], d["location"]["column"], d["code"]) for d in json.loads(js.stdout)]
    from_gh = []
    for line in gh.stdout.splitlines():
        assert line.startswith("::error ")
        props = dict(kv.split("=", 1) for kv in line[len("::error ") :].split("::", 1)[0].split(","))
        code = line.split("::", 2)[2].split()[1]
        from_gh.append((props["file"], int(props["line"]), int(props["col"]), code))
    doc = json.loads(sarif.stdout)
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} >= {"DTL001", "DTL002", "DTL900"}
    from_sarif = [
        (
            res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            res["locations"][0]["physicalLocation"]["region"]["startLine"],
            res["locations"][0]["physicalLocation"]["region"]["startColumn"],
            res["ruleId"],
        )
        for res in run["results"]
    ]
    n_expected = sum(
        len([ln for ln in (fixtures / c / "expected.txt").read_text().splitlines() if ln.strip()])
        for c in ("dtl001", "dtl002", "dtl005", "syntax")
    )
    assert len(from_text) == n_expected
    assert from_text == from_json == from_gh == from_sarif
    # and the positions are the fixture expectations
    exp = [ln for ln in (fixtures / "dtl002" / "expected.txt").read_text().split("\n") if ln]
    got = [f"{l}:{c} {code}" for f, l, c, code in from_text if f == "dtl002.py"]
    assert got == exp


def test_json_end_positions_and_fix_field(run_lint, tmp_path):
    write(tmp_path, {"bad.py": BAD})
    d = json.loads(run_lint("bad.py", "--output-format", "json", cwd=tmp_path).stdout)
    first = d[0]
    assert first["code"] == "DTL001" and first["name"] == "raw-grad-augassign"
    assert first["end_location"] == {"row": 6, "column": 30}  # end of `p.data -= lr * p.grad`
    assert first["fix"]["applicability"] == "unsafe"


def test_statistics(run_lint, cli, tmp_path):
    write(tmp_path, {"a.py": BAD, "b.py": BAD.replace("p.data.add_", "p.data.sub_")})
    r = run_lint(".", "--statistics", cwd=tmp_path)
    assert r.returncode == 1
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert rows == [["2", "DTL001", "raw-grad-augassign"], ["2", "DTL002", "raw-grad-inplace"]]
    js = json.loads(cli(".", "--statistics", "--output-format", "json", cwd=tmp_path).stdout)
    assert {(x["code"], x["count"]) for x in js} == {("DTL001", 2), ("DTL002", 2)}


# ----------------------------------------------------------------------------- selection, config


def test_select_ignore_extend_select(run_lint, cli, tmp_path):
    write(tmp_path, {"bad.py": BAD})
    codes = lambda r: [c for *_, c in positions_text(r.stdout)]  # noqa: E731
    assert codes(run_lint("bad.py", "--select", "DTL002", cwd=tmp_path)) == ["DTL002"]
    assert codes(cli("bad.py", "--ignore", "DTL002", cwd=tmp_path)) == ["DTL001"]
    r = cli("bad.py", "--select", "DTL001", "--extend-select", "DTL002", cwd=tmp_path)
    assert codes(r) == ["DTL001", "DTL002"]
    r = cli("bad.py", "--ignore", "DTL00", cwd=tmp_path)
    assert r.returncode == 0


def test_pyproject_config(run_lint, cli, tmp_path):
    write(
        tmp_path,
        {
            "pyproject.toml": textwrap.dedent(
                """\
                [tool.dualtype-lint]
                ignore = ["DTL002"]
                exclude = ["generated/"]
                dualizers = ["whiten"]

                [tool.dualtype-lint.per-file-ignores]
                "tests/*" = ["DTL001"]
                """
            ),
            "src/bad.py": BAD,
            "tests/test_bad.py": BAD,
            "generated/bad.py": BAD,
            "src/ortho.py": "def f(p):\n    p.add_(whiten(p.grad))\n    p.add_(other(p.grad))\n",
        },
    )
    r = run_lint(cwd=tmp_path)
    found = positions_text(r.stdout)
    assert ("src/bad.py", 6, 9, "DTL001") in found
    assert not any(f.startswith("tests/") for f, *_ in found)  # per-file-ignores
    assert not any(f.startswith("generated/") for f, *_ in found)  # exclude
    assert not any(c == "DTL002" and f == "src/bad.py" for f, _, _, c in found)  # ignore
    # whiten is a dualizer; other() is not (reported although DTL002 is ignored? no)
    assert [(f, l) for f, l, _, _ in found if f == "src/ortho.py"] == []
    r2 = cli("--isolated", cwd=tmp_path)  # no config: everything
    found2 = positions_text(r2.stdout)
    assert ("src/ortho.py", 3, 5, "DTL002") in found2 and ("src/ortho.py", 2, 5, "DTL002") in found2
    assert any(f.startswith("generated/") for f, *_ in found2)  # only .gitignore/defaults apply


def test_config_flag_and_subdirectory_discovery(run_lint, cli, tmp_path):
    write(
        tmp_path,
        {
            "pyproject.toml": '[tool.dualtype-lint]\nselect = ["DTL002"]\n',
            "pkg/sub/bad.py": BAD,
            "other.toml": '[tool.dualtype-lint]\nselect = ["DTL001"]\n',
        },
    )
    # run from a subdirectory: the nearest pyproject.toml above applies
    r = run_lint("bad.py", cwd=tmp_path / "pkg" / "sub")
    assert [c for *_, c in positions_text(r.stdout)] == ["DTL002"]
    r = cli("bad.py", "--config", str(tmp_path / "other.toml"), cwd=tmp_path / "pkg" / "sub")
    assert [c for *_, c in positions_text(r.stdout)] == ["DTL001"]
    r = cli("bad.py", "--config", "nope.toml", cwd=tmp_path / "pkg" / "sub")
    assert r.returncode == 2


def test_gitignore_and_explicit_files(run_lint, cli, tmp_path):
    write(
        tmp_path,
        {
            ".gitignore": "ignored/\n*_gen.py\n!keep_gen.py\n",
            "ignored/bad.py": BAD,
            "a_gen.py": BAD,
            "keep_gen.py": BAD,
            "src/.gitignore": "local.py\n",
            "src/local.py": BAD,
            "src/ok.py": BAD,
            ".venv/lib/bad.py": BAD,
        },
    )
    (tmp_path / ".git").mkdir()
    r = run_lint("--show-files", cwd=tmp_path)
    assert r.stdout.split() == ["keep_gen.py", "src/ok.py"]
    # files named explicitly are linted even when ignored (like ruff) ...
    r = cli("a_gen.py", "-q", cwd=tmp_path)
    assert r.returncode == 1
    # ... unless --force-exclude (what the pre-commit hook passes)
    r = cli("a_gen.py", "ignored/bad.py", "--force-exclude", cwd=tmp_path)
    assert r.returncode == 0
    r = cli("--show-files", "--no-respect-gitignore", cwd=tmp_path)
    assert "ignored/bad.py" in r.stdout.split() and ".venv/lib/bad.py" not in r.stdout


# ----------------------------------------------------------------------------- suppression


def test_noqa_and_file_level_suppression(run_lint, tmp_path):
    write(
        tmp_path,
        {
            "noqa.py": BAD.replace("p.data -= lr * p.grad", "p.data -= lr * p.grad  # noqa: DTL001")
            .replace("alpha=-lr)", "alpha=-lr)  # noqa:DTL001"),
            "skip.py": "# dualtype-lint: skip-file\n" + BAD,
            "filecode.py": "# dualtype-lint: noqa: DTL002\n" + BAD,
        },
    )
    r = run_lint(".", "-q", cwd=tmp_path)
    found = positions_text(r.stdout)
    assert ("noqa.py", 7, 9, "DTL002") in found  # the noqa names another code
    assert not any(f == "noqa.py" and c == "DTL001" for f, _, _, c in found)
    assert not any(f == "skip.py" for f, *_ in found)
    assert [(f, c) for f, _, _, c in found if f == "filecode.py"] == [("filecode.py", "DTL001")]


# ----------------------------------------------------------------------------- broken files


def test_syntax_and_decode_errors_are_diagnostics_and_the_run_continues(run_lint, tmp_path):
    write(
        tmp_path,
        {
            "a_syntax.py": "def f(:\n    p.grad\n",
            "b_latin1.py": b"x = '\xff'\ngrad = 1\n",
            "c_bad.py": BAD,
            "d_declared.py": b"# -*- coding: latin-1 -*-\nx = '\xff'\n",
            "e_nul.py": b"grad = 1\x00\n",
        },
    )
    r = run_lint(".", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    found = positions_text(r.stdout)
    assert ("a_syntax.py", 1, 7, "DTL900") in found
    assert ("b_latin1.py", 1, 6, "DTL901") in found
    assert ("c_bad.py", 6, 9, "DTL001") in found
    assert not any(f == "d_declared.py" for f, *_ in found)  # PEP 263 declared: valid
    assert any(f == "e_nul.py" and c == "DTL900" for f, _, _, c in found)
    assert "Traceback" not in r.stderr


def test_prefilter_skips_parsing_but_no_prefilter_parses(cli, tmp_path):
    write(tmp_path, {"broken_but_unrelated.py": "def f(:\n    pass\n"})
    assert cli(".", cwd=tmp_path).returncode == 0
    r = cli(".", "--no-prefilter", cwd=tmp_path)
    assert r.returncode == 1 and "DTL900" in r.stdout


# ----------------------------------------------------------------------------- fixes


def test_fix_needs_unsafe_fixes(run_lint, cli, tmp_path):
    write(tmp_path, {"bad.py": BAD})
    r = run_lint("bad.py", "--fix", cwd=tmp_path)
    assert r.returncode == 1
    assert "--unsafe-fixes" in r.stdout
    assert (tmp_path / "bad.py").read_text() == BAD
    r = cli("bad.py", "--diff", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "" and "--unsafe-fixes" in r.stderr


def test_diff_then_fix(run_lint, cli, tmp_path):
    write(tmp_path, {"bad.py": '"""Doc."""\nfrom __future__ import annotations\n\n' + BAD})
    r = run_lint("bad.py", "--diff", "--unsafe-fixes", cwd=tmp_path)
    assert r.returncode == 1
    assert "+from dualtype import dualize" in r.stdout
    # an untyped file: the fix names the l2 norm, whose duality map fits any shape
    assert '+        p.data -= lr * dualize(p.grad, "l2")' in r.stdout
    assert '+        p.data.add_(dualize(p.grad, "l2"), alpha=-lr)' in r.stdout
    before = (tmp_path / "bad.py").read_text()
    r = run_lint("bad.py", "--fix", "--unsafe-fixes", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    assert "2 fixed, 0 remaining" in r.stdout
    after = (tmp_path / "bad.py").read_text()
    assert after != before
    lines = after.splitlines()
    assert lines[:5] == ['"""Doc."""', "from __future__ import annotations", "", "import torch", "from dualtype import dualize"]
    assert cli("bad.py", cwd=tmp_path).returncode == 0
    # idempotent: a second fix run changes nothing
    cli("bad.py", "--fix", "--unsafe-fixes", cwd=tmp_path)
    assert (tmp_path / "bad.py").read_text() == after


def test_fix_uses_existing_alias_and_keeps_unfixable(cli, tmp_path):
    src = textwrap.dedent(
        """\
        import dualtype as dt


        def f(p, lr):
            p -= lr * p.grad
            p.add_(newton(p.grad))
        """
    )
    write(tmp_path, {"m.py": src})
    r = cli("m.py", "--fix", "--unsafe-fixes", cwd=tmp_path)
    assert r.returncode == 1  # the call-wrapped gradient has no mechanical fix
    text = (tmp_path / "m.py").read_text()
    assert "p -= lr * dt.dualize(p.grad)" in text and "from dualtype import" not in text
    assert positions_text(r.stdout) == [("m.py", 6, 5, "DTL002")]


# ----------------------------------------------------------------------------- parallelism, stdin


def test_parallel_equals_serial(run_lint, tmp_path):
    files = {f"m{i:02d}.py": BAD if i % 3 else CLEAN for i in range(24)}
    files["zz_syntax.py"] = "grad = (\n"
    write(tmp_path, files)
    serial = run_lint(".", "-j", "1", "--output-format", "json", cwd=tmp_path)
    parallel = run_lint(".", "-j", "2", "--output-format", "json", cwd=tmp_path)
    assert serial.returncode == parallel.returncode == 1
    assert json.loads(serial.stdout) == json.loads(parallel.stdout)
    assert len(json.loads(serial.stdout)) == 16 * 2 + 1


def test_stdin(run_lint, tmp_path):
    r = run_lint("-", "--stdin-filename", "snippet.py", input=BAD, cwd=tmp_path)
    assert r.returncode == 1
    assert positions_text(r.stdout)[0] == ("snippet.py", 6, 9, "DTL001")


def test_explain_and_version(run_lint, cli):
    r = run_lint("--explain", "DTL004")
    assert r.returncode == 0 and "Bad::" in r.stdout and "_foreach_add_" in r.stdout
    assert cli("--explain", "DTL999").returncode == 2
    assert cli("--version").returncode == 0
    r = cli("check", "--explain", "all")
    assert r.returncode == 0 and r.stdout.count("DTL") == 9


def test_a_worker_crash_costs_one_file_not_the_run(tmp_path):
    """If the native parser kills a worker (segfault), only that file becomes DTL902."""
    files = {f"m{i:02d}.py": BAD for i in range(20)}
    files["m07_crash.py"] = BAD
    write(tmp_path, files)
    script = textwrap.dedent(
        """\
        import os, signal, sys
        import dualtype_lint.runner as runner
        real = runner.lint_path
        def lint_path(path, settings, display=None):
            if "crash" in path:
                os.kill(os.getpid(), signal.SIGSEGV)
            return real(path, settings, display)
        runner.lint_path = lint_path
        from dualtype_lint.cli import main
        sys.exit(main(["-j", "2", "-q", "."]))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    found = positions_text(r.stdout)
    assert [f for f, _, _, c in found if c == "DTL902"] == ["m07_crash.py"]
    assert sum(1 for f, _, _, c in found if c == "DTL001") == 20


def test_workers_die_with_the_parent(lint_cmd, tmp_path):
    """A CI timeout that kills dualtype-lint must not leave its workers running."""
    import os
    import signal
    import time

    files = {f"m{i:03d}.py": BAD * 40 for i in range(200)}
    write(tmp_path, files)
    proc = subprocess.Popen([*lint_cmd, ".", "-j", "2", "--no-prefilter"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        children: list[int] = []
        for _ in range(100):  # wait until the workers exist
            time.sleep(0.1)
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
            children = [int(x) for x in out.split()]
            if len(children) >= 2:
                break
        assert children, "no worker processes were started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        alive = children
        while alive and time.time() < deadline:
            time.sleep(0.1)
            alive = [c for c in alive if os.path.exists(f"/proc/{c}") and
                     "Z" not in open(f"/proc/{c}/stat").read().split(")")[1].split()[0]]
        assert not alive, f"workers still running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_add_noqa(run_lint, cli, tmp_path):
    src = textwrap.dedent(
        '''\
        def f(w, lr):
            w -= lr * w.grad
            w.add_(w.grad, alpha=-lr)  # noqa: E501
            w.add_(w.grad, alpha=-lr); w -= w.grad
            w.add_(w.grad, note="""
        text""")
        '''
    )
    write(tmp_path, {"a.py": src})
    r = run_lint("a.py", "--add-noqa", cwd=tmp_path)
    assert "Added 4 noqa directives." in r.stderr
    lines = (tmp_path / "a.py").read_text().splitlines()
    assert lines[1] == "    w -= lr * w.grad  # noqa: DTL001"
    assert lines[2] == "    w.add_(w.grad, alpha=-lr)  # noqa: E501, DTL002"
    assert lines[3].endswith("  # noqa: DTL001, DTL002")
    assert lines[4] == '    w.add_(w.grad, note="""'  # ends inside a string: left alone
    assert r.returncode == 1  # that one is still a finding
    after = cli("a.py", "-q", cwd=tmp_path)
    assert [(l, c) for _, l, _, c in positions_text(after.stdout)] == [(5, "DTL002")]
