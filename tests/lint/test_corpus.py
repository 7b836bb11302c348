"""The corpus (``fixtures/corpus/``): public optimizer code and training loops, with the expected
findings written next to the lines (``# expect: DTL00N``). Measures precision and recall per rule.

    python tests/lint/test_corpus.py     # prints the table
"""

from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from dualtype_lint.config import Settings
from dualtype_lint.engine import lint_path

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
OTHER = Path(__file__).parent / "fixtures" / "corpus_other"  # JAX, NumPy: scored, no targets
_EXPECT = re.compile(r"#\s*expect:\s*((?:DTL\d{3}(?:\|DTL\d{3})*[\s,]*)+)")
RAW_RULES = ("DTL001", "DTL002", "DTL003", "DTL004", "DTL005")
Site = tuple[str, int, tuple[str, ...]]  # file, line, the codes any one of which is right


def expected(path: Path) -> list[Site]:
    """``# expect: DTL002`` asks for one finding; ``DTL002|DTL006`` for one under either code
    (matrix-preconditioned updates, which no rule owns); ``DTL001, DTL002`` for two."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = _EXPECT.search(line)
        if m:
            alts = re.findall(r"DTL\d{3}(?:\|DTL\d{3})*", m.group(1))
            out += [(path.name, i, tuple(a.split("|"))) for a in alts]
    return out


def found(path: Path) -> list[tuple[str, int, str]]:
    res = lint_path(str(path), Settings())
    assert not res.internal_error, res.diagnostics
    return [(path.name, d.line, d.code) for d in res.diagnostics]


@functools.lru_cache(maxsize=None)
def measure(corpus: Path = CORPUS) -> tuple[dict[str, tuple[int, int, int]], list, list]:
    """(rule -> (TP, FP, FN), false positives, misses). A finding matches an expected site on its
    line with one of its codes and counts as a TP of the code reported; an unmatched site is a
    miss of its first code; an unmatched finding a false positive of its code."""
    tp: Counter = Counter()
    extra: list = []
    missed: list = []
    for p in sorted(corpus.glob("*.py")):
        got = found(p)
        for name, line, codes in expected(p):
            hit = next((f for f in got if f[1] == line and f[2] in codes), None)
            if hit is None:
                missed.append((name, line, codes[0]))
            else:
                got.remove(hit)
                tp[hit[2]] += 1
        extra += got
    fp = Counter(c for _, _, c in extra)
    fn = Counter(c for _, _, c in missed)
    codes = sorted(set(tp) | set(fp) | set(fn))
    return {c: (tp[c], fp[c], fn[c]) for c in codes}, extra, missed


def test_corpus_is_large_enough_and_covers_the_rules():
    files = list(CORPUS.glob("*.py"))
    assert len(files) >= 8
    codes = {c for p in files for _, _, alts in expected(p) for c in alts}
    assert {"DTL001", "DTL002", "DTL003", "DTL004", "DTL005", "DTL006"} <= codes
    for p in files:
        head = p.read_text().split("\n", 3)[:3]
        assert any("Source" in h or "Written for this corpus" in h for h in head), p.name


@pytest.mark.parametrize("code", ["DTL001", "DTL002", "DTL003", "DTL004", "DTL005", "DTL006"])
def test_precision_and_recall_per_rule(code: str) -> None:
    table, extra, missed = measure()
    tp, fp, fn = table.get(code, (0, 0, 0))
    assert tp > 0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    assert precision >= 0.97, sorted(x for x in extra if x[2] == code)
    assert recall >= 0.95, sorted(x for x in missed if x[2] == code)


def test_no_raw_update_findings_on_orthogonalized_sign_or_normalized_paths():
    """The Muon, Lion, Dion and normalized updates of the public code are clean; only their
    Adam branches are reported, as DTL006."""
    for name in ("muon_keller.py", "lion_lucidrains.py", "dion_muon_reference.py",
                 "modded_nanogpt_muon_backends.py", "near_misses.py", "soap_dion.py",
                 "muon_torch.py", "muon_timm.py", "muon_kozistr.py", "muon_moonlight.py",
                 "normuon_modded_nanogpt.py", "contra_muon_modded_nanogpt.py",
                 "muonh_dynmuon_modded_nanogpt.py", "muonsq_modded_nanogpt.py",
                 "dion_simple_microsoft.py", "distadam_modded_nanogpt.py", "lion_foreach_lucidrains.py"):
        assert not [f for f in found(CORPUS / name) if f[2] in RAW_RULES], name


def test_other_frameworks_are_linted_and_found_where_their_spelling_is_torch_like():
    """The JAX/NumPy files are scored for the record; the linter must read them without an
    internal error and find the updates spelled as in torch (``x -= lr * g`` on a weight)."""
    table, _, _ = measure(OTHER)
    assert sum(tp for tp, _, _ in table.values()) > 0


if __name__ == "__main__":  # pragma: no cover - a report for humans
    for corpus in (CORPUS, OTHER):
        table, extra, missed = measure(corpus)
        print(f"# {corpus.name}")
        print(f"{'rule':8} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>7}")
        for c, (tp, fp, fn) in table.items():
            p = tp / (tp + fp) if tp + fp else float("nan")
            r = tp / (tp + fn) if tp + fn else float("nan")
            print(f"{c:8} {tp:4} {fp:4} {fn:4} {p:10.3f} {r:7.3f}")
        for x in sorted(extra):
            print("false positive:", *x)
        for x in sorted(missed):
            print("missed:", *x)
    sys.exit(0)
