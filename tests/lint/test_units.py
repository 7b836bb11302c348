"""Small pieces: name heuristics, gitignore patterns, decoding, noqa, code selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualtype_lint.config import ConfigError, Settings, expand_codes
from dualtype_lint.directives import file_directive, noqa_codes
from dualtype_lint.engine import decode_source, lint_text
from dualtype_lint.files import IgnoreSet, compile_pattern
from dualtype_lint.names import is_grad_name, is_inplace_method, is_weight_name


@pytest.mark.parametrize("name", ["p", "w", "W", "w1", "param", "params", "weight", "bias", "device_params",
                                  "params_with_grad", "master_weights", "fc_weight", "theta"])
def test_weight_names(name):
    assert is_weight_name(name)


@pytest.mark.parametrize("name", ["grad", "lr", "weight_decay", "param_groups", "param_state", "num_params",
                                  "bias_correction2", "grad_params", "exp_avg", "buf", "loss_weight", "attn_weights"])
def test_not_weight_names(name):
    assert not is_weight_name(name)


@pytest.mark.parametrize("name", ["grad", "grads", "device_grads", "d_p", "d_p_list", "gradients", "main_grad", "grouped_grads_"])
def test_grad_names(name):
    assert is_grad_name(name)


@pytest.mark.parametrize("name", ["requires_grad", "grad_norm", "max_grad_norm", "grad_fn", "params_with_grad",
                                  "grad_scaler", "has_sparse_grad", "set_grad_enabled", "gradient_checkpointing"])
def test_not_grad_names(name):
    assert not is_grad_name(name)


def test_inplace_method_names():
    assert is_inplace_method("add_") and is_inplace_method("addcdiv_")
    assert not is_inplace_method("__iadd__") and not is_inplace_method("add") and not is_inplace_method("_")


@pytest.mark.parametrize(
    "pattern,path,is_dir,expected",
    [
        ("build/", "build", True, True),
        ("build/", "build", False, None),
        ("*.pyc", "a/b/c.pyc", False, True),
        ("/top.py", "top.py", False, True),
        ("/top.py", "sub/top.py", False, None),
        ("docs/**/gen_*.py", "docs/x/y/gen_a.py", False, True),
        ("**/tmp", "a/b/tmp", True, True),
        ("a/*/c", "a/b/c", True, True),
        ("a/*/c", "a/b/x/c", True, None),
        ("file[0-9].py", "file7.py", False, True),
    ],
)
def test_gitignore_patterns(pattern, path, is_dir, expected):
    base = Path("/r")
    s = IgnoreSet(base, [pattern])
    assert s.match(base / path, is_dir) is expected


def test_gitignore_negation_and_comments():
    base = Path("/r")
    s = IgnoreSet(base, ["# comment", "", "*.py", "!keep.py"])
    assert s.match(base / "x.py", False) is True
    assert s.match(base / "keep.py", False) is False
    assert compile_pattern("# c") is None and compile_pattern("   ") is None


def test_decode_source():
    assert decode_source("x = 'é'\n".encode())[0] == "x = 'é'\n"
    text, enc, err = decode_source(b"a = 1\nb = '\xe9'\n")
    assert text is None and err[:2] == (2, 6)
    text, enc, err = decode_source(b"# coding: latin-1\nb = '\xe9'\n")
    assert text == "# coding: latin-1\nb = 'é'\n" and enc in ("iso-8859-1", "latin-1")
    text, enc, err = decode_source(b"\xef\xbb\xbfx = 1\n")  # BOM
    assert text == "x = 1\n"
    assert decode_source(b"# coding: nonsense-codec\n")[2] is not None


def test_noqa_parsing():
    assert noqa_codes("x  # noqa") == frozenset()
    assert noqa_codes("x  # NOQA: dtl001, DTL002") == {"DTL001", "DTL002"}
    assert noqa_codes("x  # noqa:DTL003 because") == {"DTL003"}
    assert noqa_codes("x  # not a suppression") is None
    assert file_directive("# dualtype-lint: skip-file\n") == (True, frozenset())
    assert file_directive("x = 1\n  # dualtype-lint: noqa: DTL001,DTL004\n") == (False, {"DTL001", "DTL004"})
    assert file_directive("s = '# dualtype-lint: skip-file'\n") == (False, frozenset())


def test_expand_codes():
    assert expand_codes(["DTL"], "x") >= {"DTL001", "DTL005", "DTL900"}
    assert expand_codes(["dtl00"], "x") == {"DTL001", "DTL002", "DTL003", "DTL004", "DTL005", "DTL006"}
    with pytest.raises(ConfigError):
        expand_codes(["E501"], "select")


def test_per_file_ignores_globs(tmp_path):
    s = Settings(root=str(tmp_path), per_file_ignores=(("tests/*", frozenset({"DTL001"})), ("conftest.py", frozenset({"DTL002"}))))
    assert "DTL001" not in s.codes_for(str(tmp_path / "tests" / "test_a.py"))
    assert "DTL001" in s.codes_for(str(tmp_path / "src" / "a.py"))
    assert "DTL002" not in s.codes_for(str(tmp_path / "pkg" / "conftest.py"))


def test_prefilter_reads_only():
    res = lint_text("x = 1\n", "a.py", Settings())
    assert res.prefiltered and not res.parsed
    res = lint_text("x = 1  # grad\n", "a.py", Settings())
    assert res.parsed and not res.prefiltered


def test_internal_errors_become_diagnostics(monkeypatch):
    import dualtype_lint.engine as engine

    def boom(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.Analyzer, "run", boom)
    res = lint_text("w -= w.grad\n", "a.py", Settings())
    assert res.internal_error and [d.code for d in res.diagnostics] == ["DTL902"]
    assert "boom" in res.diagnostics[0].message


def test_lean_positions_match_libcst_position_provider():
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    from dualtype_lint.positions import node_ranges

    kinds = (cst.Call, cst.AugAssign, cst.Assign, cst.AnnAssign, cst.ListComp, cst.GeneratorExp, cst.DictComp, cst.NamedExpr)

    class Collect(cst.CSTVisitor):
        def __init__(self):
            super().__init__()
            self.nodes = []

        def on_visit(self, node):
            if isinstance(node, kinds):
                self.nodes.append(node)
            return True

    fixtures = Path(__file__).parent / "fixtures"
    sources = [p.read_text() for p in sorted(fixtures.glob("*/input.py")) if p.parent.name != "syntax"]
    sources.append("x = [\r\n  f(a),\r\n  g(b)]\r\ny = h(\rc)\n")  # CRLF and a lone CR
    for src in sources:
        module = cst.parse_module(src)
        c = Collect()
        module.visit(c)
        assert c.nodes
        mine = node_ranges(module, c.nodes)
        ref = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        for n in c.nodes:
            r = ref[n]
            assert mine[id(n)] == ((r.start.line, r.start.column), (r.end.line, r.end.column))


def test_config_is_read_with_tomllib():
    """The hand-written TOML reader is gone: tomllib (tomli before 3.11) reads the table."""
    import tempfile

    import dualtype_lint.config as config
    from dualtype_lint.config import load_toml

    assert not hasattr(config, "_mini_toml")
    text = (
        '[project]\nname = "x"\n\n[tool.dualtype-lint]\nselect = ["DTL"]  # comment\n'
        'ignore = [\n  "DTL005",\n]\ndualizers = ["a.b", "c"]\n\n'
        '[tool.dualtype-lint.per-file-ignores]\n"tests/*" = ["DTL001"]\n\n[tool.other]\nx = 1\n'
    )
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "pyproject.toml").write_text(text)
        assert load_toml(Path(d) / "pyproject.toml")["tool"]["dualtype-lint"] == {
            "select": ["DTL"], "ignore": ["DTL005"], "dualizers": ["a.b", "c"],
            "per-file-ignores": {"tests/*": ["DTL001"]},
        }


def test_lean_positions_are_used_on_the_tested_libcst():
    from dualtype_lint import positions

    assert positions.LEAN == (
        positions.TESTED_LIBCST[0] <= positions._libcst_version() <= positions.TESTED_LIBCST[1]
    )


@pytest.mark.parametrize(
    "src,expected",
    [
        ("with torch.no_grad():\n    x.requires_grad_(True)\nopt.zero_grad()\n", False),
        ("x = 1\n", False),
        ("w -= w.grad\n", True),
        ("def f(grads): pass\n", True),
        ("from torch.autograd import grad\n", True),
        ("import torch.autograd as ag\n", True),
        ("def f(d_p): pass\n", True),
        ("s = state['main_grad']\n", True),
    ],
)
def test_prefilter_tokens(src, expected):
    from dualtype_lint.engine import might_have_findings

    assert might_have_findings(src) is expected
