"""The ``dualtype-lint`` command.

Exit codes (as ruff): 0 no findings, 1 findings (or, with ``--diff``, changes to show),
2 usage, configuration or internal error.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import __version__
from .config import ConfigError, Settings, build_settings
from .files import discover
from .output import FORMATS, statistics, write
from .rules import ALL_RULES, INTERNAL_ERROR, RULES_BY_CODE

if TYPE_CHECKING:  # the engine imports libcst: --help/--version stay fast without it
    from .engine import Diagnostic, FileResult

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _codes(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dualtype-lint",
        description="Find raw gradients applied to weights (gradients are dual vectors: dualize them first).",
    )
    p.add_argument("paths", nargs="*", help="files or directories to check (default: .); '-' reads stdin")
    p.add_argument("--select", action="append", metavar="CODES", help="comma-separated codes or prefixes to enable (replaces the configured set)")
    p.add_argument("--extend-select", action="append", default=[], metavar="CODES", help="codes or prefixes to enable in addition")
    p.add_argument("--ignore", action="append", default=[], metavar="CODES", help="codes or prefixes to disable")
    p.add_argument("--config", metavar="PATH", help="read [tool.dualtype-lint] from this pyproject.toml instead of searching")
    p.add_argument("--isolated", action="store_true", help="ignore all configuration files")
    p.add_argument("--output-format", choices=FORMATS, default="text", help="text (default), json, github or sarif")
    p.add_argument("--statistics", action="store_true", help="print counts per rule instead of each finding")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even if there are findings")
    p.add_argument("--fix", action="store_true", help="apply fixes (all fixes change numerics: needs --unsafe-fixes)")
    p.add_argument("--diff", action="store_true", help="print the fixes as a unified diff instead of applying them")
    p.add_argument("--unsafe-fixes", action="store_true", help="allow fixes that change what the program computes")
    p.add_argument("--add-noqa", action="store_true", help="append `# noqa: CODE` to every line with a finding (to adopt the linter on existing code)")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N", help="worker processes (default 0: one per CPU; 1: serial)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="gitignore-style pattern to exclude (added to the configured ones)")
    p.add_argument("--force-exclude", action="store_true", help="apply exclusions to files named on the command line too")
    p.add_argument("--no-respect-gitignore", action="store_true", help="do not read .gitignore files")
    p.add_argument("--dualizer", action="append", default=[], metavar="NAME", help="treat calls of NAME as a duality map (added to the configured ones)")
    p.add_argument("--no-prefilter", action="store_true", help="parse every file, even those that cannot contain a finding (reports their syntax errors too)")
    p.add_argument("--stdin-filename", metavar="PATH", help="the name to report for '-' (stdin)")
    p.add_argument("--show-files", action="store_true", help="list the files that would be checked and exit")
    p.add_argument("--explain", metavar="CODE", help="print the documentation of one rule and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print findings only, no summary")
    p.add_argument("--version", action="version", version=f"dualtype-lint {__version__}")
    return p


def _explain(code: str) -> int:
    code = code.upper()
    if code == "ALL":
        for r in ALL_RULES:
            print(f"{r.code}  {r.name:<22} {r.summary}")
        return EXIT_CLEAN
    r = RULES_BY_CODE.get(code)
    if r is None:
        print(f"dualtype-lint: error: unknown rule {code!r}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{r.code} ({r.name})\n")
    print(textwrap.dedent("    " + (r.__doc__ or "").strip()))
    return EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dualtype-lint`` with ``argv`` (default ``sys.argv[1:]``); return the exit code
    (0 clean, 1 findings, 2 usage, configuration or internal error). Never raises."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # pragma: no cover
        return EXIT_ERROR
    except BrokenPipeError:  # pragma: no cover - `dualtype-lint ... | head`
        return EXIT_ERROR
    except Exception as exc:  # never a traceback in CI logs without an exit code of 2
        print(f"dualtype-lint: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["check"]:  # `dualtype-lint check ...`, as `ruff check`
        args_list = args_list[1:]
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.explain:
        return _explain(args.explain)
    if args.jobs < 0:
        parser.error("--jobs must be >= 0")
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"dualtype-lint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    files, missing = discover(
        args.paths or ["."],
        root=settings.root,
        exclude=settings.exclude,
        respect_gitignore=not args.no_respect_gitignore,
        force_exclude=args.force_exclude,
    )
    for m in missing:
        print(f"dualtype-lint: error: no such file or directory: {m}", file=sys.stderr)
    if missing:
        return EXIT_ERROR
    if args.show_files:
        for f in files:
            print(f)
        return EXIT_CLEAN

    from .runner import run  # imported late: --help/--version stay fast

    run_ = _Run(args, run(files, settings, args.jobs, args.stdin_filename))
    if args.diff:
        return _report_diff(args, run_)
    if args.add_noqa:
        return _report_add_noqa(args, run_)
    return _report(args, run_)


def _settings(args: argparse.Namespace) -> Settings:
    """The configuration files merged with the command line (ConfigError if invalid)."""
    settings = build_settings(
        cwd=Path.cwd(),
        config=args.config,
        isolated=args.isolated,
        select=_codes(args.select),
        extend_select=_codes(args.extend_select) or [],
        ignore=_codes(args.ignore) or [],
        extend_exclude=args.exclude,
        dualizers=args.dualizer,
    )
    settings.prefilter = not args.no_prefilter
    settings.fix = args.fix
    settings.diff = args.diff
    settings.unsafe_fixes = args.unsafe_fixes
    return settings


class _Run:
    """The results of one run, with the totals every report needs."""

    def __init__(self, args: argparse.Namespace, results: list[FileResult]) -> None:
        self.results = results
        self.diags = sorted((d for r in results for d in r.diagnostics), key=lambda d: d.sort_key())
        self.internal = any(r.internal_error for r in results) or any(d.code == INTERNAL_ERROR for d in self.diags)
        self.fixed = sum(r.fixed for r in results)
        self.n_fixable = sum(1 for d in self.diags if d.fixable)
        self.stdin_source = next((r.stdout_source for r in results if r.stdout_source is not None), None)
        # `--fix -` (as ruff): the fixed source is the output; findings and summary go to stderr
        fixed_stdin = self.stdin_source is not None and not args.diff and not args.add_noqa
        self.out = sys.stderr if fixed_stdin else sys.stdout

    def exit_code(self, findings: bool, exit_zero: bool) -> int:
        if self.internal:
            return EXIT_ERROR
        return EXIT_FINDINGS if findings and not exit_zero else EXIT_CLEAN


def _report_diff(args: argparse.Namespace, run: _Run) -> int:
    """``--diff``: the unified diffs on stdout, a one-line summary on stderr."""
    diffs = [r.diff for r in run.results if r.diff]
    for d in diffs:
        run.out.write(d)
    if not args.quiet:
        if diffs:
            msg = f"Would fix {run.fixed} error{'s' * (run.fixed != 1)}."
        elif run.n_fixable and not args.unsafe_fixes:
            msg = _hidden(run.n_fixable)
        else:
            msg = "No errors would be fixed."
        print(msg, file=sys.stderr)
    return run.exit_code(bool(diffs), args.exit_zero)


def _report_add_noqa(args: argparse.Namespace, run: _Run) -> int:
    """``--add-noqa``: write the directives; findings that could not take one still count."""
    from .noqa import add_noqa

    by_file: dict[str, list[Diagnostic]] = {}
    for d in run.diags:
        if d.path != "-":
            by_file.setdefault(d.path, []).append(d)
    added = sum(add_noqa(path, ds) for path, ds in by_file.items())
    if not args.quiet:
        print(f"Added {added} noqa directive{'s' * (added != 1)}.", file=sys.stderr)
    left = sum(1 for d in run.diags if d.code.startswith("DTL9"))
    return run.exit_code(bool(left or added < len(run.diags) - left), args.exit_zero)


def _report(args: argparse.Namespace, run: _Run) -> int:
    """The findings (or their counts) in the chosen format, then the summary."""
    show_fixes = args.unsafe_fixes
    if args.statistics:
        statistics(run.diags, args.output_format, run.out, show_fixes)
    else:
        write(run.diags, args.output_format, run.out, show_fixes)
    if not args.quiet and args.output_format == "text":
        summary = run.out if not args.statistics else sys.stderr
        for line in _summary(args, run):
            print(line, file=summary)
    if run.stdin_source is not None and run.out is not sys.stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(run.stdin_source)
        sys.stdout.flush()
    return run.exit_code(bool(run.diags), args.exit_zero)


def _summary(args: argparse.Namespace, run: _Run) -> list[str]:
    """The text summary: counts of findings and fixes, or "All checks passed!"."""
    n, fixed, n_fixable = len(run.diags), run.fixed, run.n_fixable
    if not (n or fixed):
        n_pre = sum(r.prefiltered for r in run.results)
        n_files = len(run.results)
        return [f"All checks passed! ({n_files} file{'s' * (n_files != 1)}, {n_pre} skipped by the pre-filter)"]
    if args.fix and fixed:
        lines = [f"Found {n + fixed} error{'s' * (n + fixed != 1)} ({fixed} fixed, {n} remaining)."]
    else:
        lines = [f"Found {n} error{'s' * (n != 1)}."]
    if n_fixable and args.unsafe_fixes and not args.fix:
        lines.append(f"[*] {n_fixable} fixable with `--fix --unsafe-fixes`.")
    elif n_fixable and not args.unsafe_fixes:
        lines.append(_hidden(n_fixable))
    return lines


def _hidden(n: int) -> str:
    return (
        f"No fixes applied: {n} unsafe fix{'es' * (n != 1)} available (they change numerics); "
        f"enable with `--unsafe-fixes`."
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
