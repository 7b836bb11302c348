"""Notebooks: the code cells of an ``.ipynb`` named on the command line are linted; positions
are cell and line; magics do not break the parse; fixes are never written into a notebook."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_path

NB = Path(__file__).parent / "fixtures" / "notebook" / "train.ipynb"


def test_cells_are_linted_with_cell_positions():
    res = lint_path(str(NB), Settings())
    got = [(d.cell, d.line, d.col, d.code) for d in res.diagnostics]
    # cell 3 line 6: p -= lr * p.grad (line 7, the sign update, is clean); cell 4 line 2
    assert got == [(3, 6, 9, "DTL001"), (4, 2, 1, "DTL001")]


def test_text_output_names_the_cell(cli, tmp_path):
    shutil.copy(NB, tmp_path / "train.ipynb")
    r = cli("train.ipynb", cwd=tmp_path)
    assert r.returncode == 1
    assert "train.ipynb:cell 3:6:9: DTL001" in r.stdout and "train.ipynb:cell 4:2:1: DTL001" in r.stdout


def test_fix_is_not_written_into_a_notebook(cli, tmp_path):
    shutil.copy(NB, tmp_path / "train.ipynb")
    before = (tmp_path / "train.ipynb").read_bytes()
    r = cli("train.ipynb", "--fix", "--unsafe-fixes", cwd=tmp_path)
    assert r.returncode == 1 and (tmp_path / "train.ipynb").read_bytes() == before


def test_broken_notebook_is_a_decode_error(tmp_path):
    p = tmp_path / "bad.ipynb"
    p.write_text("{not json")
    res = lint_path(str(p), Settings())
    assert [d.code for d in res.diagnostics] == ["DTL901"]


def test_noqa_in_a_cell(tmp_path):
    nb = json.loads(NB.read_text())
    nb["cells"][3]["source"] = "model.weight.data -= lr * model.weight.grad  # noqa: DTL001"
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps(nb))
    assert [d.cell for d in lint_path(str(p), Settings()).diagnostics] == [3]


def test_directory_walks_include_notebooks_and_respect_excludes(cli, tmp_path):
    (tmp_path / "nbs").mkdir()
    shutil.copy(NB, tmp_path / "nbs" / "train.ipynb")
    (tmp_path / "nbs" / ".ipynb_checkpoints").mkdir()  # excluded by default
    shutil.copy(NB, tmp_path / "nbs" / ".ipynb_checkpoints" / "train-checkpoint.ipynb")
    shutil.copy(NB, tmp_path / "nbs" / "scratch.ipynb")
    (tmp_path / "nbs" / "notes.txt").write_text("p -= lr * p.grad\n")  # not a linted suffix
    r = cli(".", "--exclude", "scratch.ipynb", cwd=tmp_path)
    assert r.returncode == 1
    assert "nbs/train.ipynb:cell 3:6:9: DTL001" in r.stdout
    assert "checkpoint" not in r.stdout and "scratch" not in r.stdout and "notes" not in r.stdout
    shown = cli(".", "--show-files", cwd=tmp_path).stdout.split()
    assert shown == ["nbs/scratch.ipynb", "nbs/train.ipynb"]
    assert cli(".", "--show-files", "--exclude", "*.ipynb", cwd=tmp_path).stdout.split() == []
