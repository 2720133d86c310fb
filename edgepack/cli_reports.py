"""The CLI's report commands: ``verify`` (with ``--measure``) and ``merge``, the budget flags they share
with ``compare``, and how a compare or merge report is printed and turned into the exit code. Parsing
and printing only, like :mod:`edgepack.cli`; the work is in :mod:`edgepack.api`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .errors import UsageError


def add_parsers(sub, time_limit_arg: Callable[[argparse.ArgumentParser], None]):
    """The ``verify`` and ``merge`` subcommands."""
    v = sub.add_parser("verify", help="re-check a bundle's checksums and files, and run its models")
    v.add_argument("bundle", help="a bundle folder (OUT/<target>)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.add_argument("--manifest-sha256", metavar="HEX", help="also check manifest.json against this sha256 (build prints it)")
    v.add_argument("--on-target", action="store_true", help="also run each model on its reference input on the "
                   "target's own runtime build under emulation (Pi bundles: aarch64 onnxruntime; see emulator setup)")
    v.add_argument("--measure", action="store_true",
                   help="also time the bundle on this machine with its own runtime and execution provider")
    v.add_argument("--runs", type=int, metavar="N", help="timed runs with --measure (default 50)")
    v.add_argument("--threads", type=int, metavar="N", help="intra-op threads with --measure (default: CPUs, at most 4)")
    time_limit_arg(v)

    g = sub.add_parser("merge", help="merge per-target compare reports and verify --measure results into one report")
    g.add_argument("inputs", nargs="+", metavar="REPORT.json",
                   help="report.json of each compare job, and verify --measure --json outputs")
    g.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder: report.{json,md,html}")
    g.add_argument("--by-model", action="store_true",
                   help="reports of several models (a model zoo): one merged report per model in OUT/<model>/")
    g.add_argument("--baseline", metavar="REPORT", help="an earlier report.json to show the change against")
    budget_args(g)
    g.add_argument("--json", action="store_true", help="print the merged report as JSON only")
    return v, g


def budget_args(p: argparse.ArgumentParser) -> None:
    """The budget flags of ``compare`` and ``merge`` (the same ones, the same [tool.edgepack] table)."""
    for key in ("max-bundle-mb", "max-latency-ms", "max-accuracy-drop", "max-battery-pct-per-hour"):
        p.add_argument(f"--{key}", type=str, metavar="X", help=f"budget for every target: {key}")
    p.add_argument("--budget", action="append", default=[], metavar="T:KEY=X",
                   help="budget for one target, e.g. android-nnapi:max-bundle-mb=8 (repeatable)")
    p.add_argument("--config", default="pyproject.toml", metavar="FILE",
                   help="read budgets from its [tool.edgepack] table (default: ./pyproject.toml)")


def budget_flags(args) -> dict:
    from .budgets import KEYS

    return {key: getattr(args, key.replace("-", "_")) for key in KEYS}


def report_outcome(result, json_only: bool | None, out, quiet: bool = False) -> int:
    """Print a compare or merge report (markdown, JSON only, or nothing with ``quiet``), then the broken
    budgets and failed targets on stderr; the exit code."""
    report = result.report
    if quiet:
        pass
    elif json_only:
        print(json.dumps(report, indent=2, default=float))
    else:
        from .render.report import markdown

        print(markdown(report))
        from .render.text import print_compare_summary

        print_compare_summary(report, out)
    for b in result.broken_budgets:
        print(f"budget failed: {b['target']} {b['budget']} = {b['value']} > {b['limit']} ({b['basis']})", file=sys.stderr)
    for target, why in result.failed_targets.items():
        print(f"target not built: {target}: {why}", file=sys.stderr)
    return result.exit_code


def cmd_verify(args) -> int:
    from . import api

    for flag in ("runs", "threads"):
        value = getattr(args, flag)
        if value is not None and (not args.measure or value < 1):
            raise UsageError(f"--{flag} needs --measure and a value of 1 or more")
    findings = api.verify(args.bundle, manifest_sha256=args.manifest_sha256, on_target=args.on_target,
                          measure=args.measure, runs=args.runs, threads=args.threads)
    if args.json:
        print(json.dumps(findings.to_json(), indent=2))
    else:
        from .render.text import print_verify

        print_verify(findings, args.bundle)
    if not findings.ok:  # one line on stderr for CI logs; the full list is on stdout
        more = f" (and {len(findings.problems) - 1} more)" if len(findings.problems) > 1 else ""
        print(f"verify failed: {args.bundle}: {findings.problems[0]}{more}", file=sys.stderr)
    return 0 if findings.ok else 1


def cmd_merge(args) -> int:
    from . import api

    results = api.merge(args.inputs, args.output, budgets=budget_flags(args), target_budgets=args.budget,
                        config=args.config, baseline=args.baseline, by_model=args.by_model)
    codes = []
    for r in results:
        if args.json:
            if r is results[0]:
                print(json.dumps(r.report if len(results) == 1 else [x.report for x in results], indent=2, default=float))
            codes.append(report_outcome(r, None, r.out, quiet=True))
        else:
            codes.append(report_outcome(r, False, Path(r.out)))
    return max(codes)
