"""The ``dualtype-lint`` command.

Exit codes (as ruff): 0 no findings, 1 findings (or, with ``--diff``, changes to show),
2 usage, configuration or internal error.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import ConfigError, build_settings
from .files import discover
from .output import FORMATS, statistics, write
from .rules import ALL_RULES, INTERNAL_ERROR, RULES_BY_CODE

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
    except ConfigError as exc:
        print(f"dualtype-lint: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    settings.prefilter = not args.no_prefilter
    settings.fix = args.fix
    settings.diff = args.diff
    settings.unsafe_fixes = args.unsafe_fixes

    paths = args.paths or ["."]
    files, missing = discover(
        paths,
        root=settings.root,
        exclude=settings.exclude,
        respect_gitignore=not args.no_respect_gitignore,
        force_exclude=args.force_exclude,
    )
    if missing:
        for m in missing:
            print(f"dualtype-lint: error: no such file or directory: {m}", file=sys.stderr)
        return EXIT_ERROR
    if args.show_files:
        for f in files:
            print(f)
        return EXIT_CLEAN

    from .runner import run  # imported late: --help/--version stay fast

    results = run(files, settings, args.jobs, args.stdin_filename)
    diags = sorted((d for r in results for d in r.diagnostics), key=lambda d: d.sort_key())
    internal = any(r.internal_error for r in results) or any(d.code == INTERNAL_ERROR for d in diags)
    fixed = sum(r.fixed for r in results)
    n_fixable = sum(1 for d in diags if d.fixable)
    out = sys.stdout
    stdin_source = next((r.stdout_source for r in results if r.stdout_source is not None), None)
    if stdin_source is not None and not args.diff and not args.add_noqa:
        # `--fix -` (as ruff): the fixed source is the output; findings and summary go to stderr
        out = sys.stderr

    if args.diff:
        diffs = [r.diff for r in results if r.diff]
        for d in diffs:
            out.write(d)
        if not args.quiet:
            if diffs:
                print(f"Would fix {fixed} error{'s' * (fixed != 1)}.", file=sys.stderr)
            elif n_fixable and not args.unsafe_fixes:
                print(_hidden(n_fixable), file=sys.stderr)
            else:
                print("No errors would be fixed.", file=sys.stderr)
        if internal:
            return EXIT_ERROR
        return EXIT_FINDINGS if diffs and not args.exit_zero else EXIT_CLEAN

    if args.add_noqa:
        from .noqa import add_noqa

        by_file: dict[str, list] = {}
        for d in diags:
            if d.path != "-":
                by_file.setdefault(d.path, []).append(d)
        added = sum(add_noqa(path, ds) for path, ds in by_file.items())
        if not args.quiet:
            print(f"Added {added} noqa directive{'s' * (added != 1)}.", file=sys.stderr)
        left = sum(1 for d in diags if d.code.startswith("DTL9"))
        if internal:
            return EXIT_ERROR
        return EXIT_FINDINGS if (left or added < len(diags) - left) and not args.exit_zero else EXIT_CLEAN

    show_fixes = args.unsafe_fixes
    if args.statistics:
        statistics(diags, args.output_format, out, show_fixes)
    else:
        write(diags, args.output_format, out, show_fixes)

    if not args.quiet and args.output_format == "text":
        summary = out if not args.statistics else sys.stderr
        if diags or fixed:
            n = len(diags)
            if args.fix and fixed:
                print(f"Found {n + fixed} error{'s' * (n + fixed != 1)} ({fixed} fixed, {n} remaining).", file=summary)
            else:
                print(f"Found {n} error{'s' * (n != 1)}.", file=summary)
            if n_fixable and show_fixes and not args.fix:
                print(f"[*] {n_fixable} fixable with `--fix --unsafe-fixes`.", file=summary)
            elif n_fixable and not show_fixes:
                print(_hidden(n_fixable), file=summary)
        else:
            n_pre = sum(r.prefiltered for r in results)
            print(
                f"All checks passed! ({len(results)} file{'s' * (len(results) != 1)}, "
                f"{n_pre} skipped by the pre-filter)",
                file=summary,
            )
    if out is not sys.stdout:
        sys.stdout.flush()
        sys.stdout.buffer.write(stdin_source)
        sys.stdout.flush()
    if internal:
        return EXIT_ERROR
    if diags and not args.exit_zero:
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _hidden(n: int) -> str:
    return (
        f"No fixes applied: {n} unsafe fix{'es' * (n != 1)} available (they change numerics); "
        f"enable with `--unsafe-fixes`."
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
