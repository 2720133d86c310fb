"""Command line: argument parsing and printing only. ``main(argv) -> int``.

Exit codes (README "Exit codes"): 0 every target built and every gate passed; 1 a target could not be
built (the others were, and each failure is reported) or a budget broke; 2 bad input or usage found
before any work (one line ``error: ...`` on stderr, no traceback); 70 a bug in edgepack (one line
``error: internal error in ...``; ``--debug`` prints the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from . import cli_reports, judging
from .errors import EdgepackError, InternalError, OutputError, UsageError


_SHAPE_HELP = ("fix an input shape, e.g. images=1x3x640x640; with several models NAME=DIMS sets that input of every "
               "model that has it and MODEL:NAME=DIMS one model's (MODEL: its file stem, det:x=1x3x640x640)")
_ON_TARGET_HELP = ("judge the shipped model of the Pi targets (rpi4-cpu, rpi5-cpu: CPU targets of the onnxruntime "
                   "wheel) on the target's own aarch64 onnxruntime under qemu user-mode emulation; needs "
                   "`edgepack emulator setup aarch64` once; costs seconds to minutes per target")
_CALIBRATION_HELP = ("folder of real input samples: <input>.npy stacks, .npz files (one per sample or stacked), "
                     "<input>/ folders of per-sample .npy files, or images with a preprocess.toml; with several "
                     "models, DIR/<model file stem>/ per model")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgepack", description="Package ONNX models for phones, laptops and single-board computers.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="print tracebacks and edgepack's log on stderr")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("targets", help="list target profiles")
    t.add_argument("--json", action="store_true", help="print JSON")

    i = sub.add_parser("inspect", help="model summary and per-target accelerator coverage")
    i.add_argument("model", help="path to an .onnx model")
    i.add_argument("--target", action="append", default=[], metavar="T",
                   help="target name or profile .toml path (repeatable; 'all' for every built-in target)")
    i.add_argument("--shape", action="append", default=[], metavar="[MODEL:]NAME=DIMS",
                   help="fix an input shape, e.g. images=1x3x640x640 (MODEL: the model file's stem)")
    i.add_argument("--per-hour", type=float, default=1000.0, metavar="N",
                   help="inferences per hour for battery/energy estimates (default 1000)")
    i.add_argument("--rate", metavar="N/s", help="the same as a rate, e.g. 30/s (overrides --per-hour)")
    i.add_argument("--json", action="store_true", help="print JSON")

    b = sub.add_parser("build", help="build one verified, minimal bundle per target")
    b.add_argument("models", nargs="+", metavar="MODEL", help=".onnx model(s); several share one operator config")
    b.add_argument("--target", action="append", default=[], metavar="T", required=True,
                   help="target name or profile .toml path (repeatable; 'all' for every built-in target)")
    b.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder: one bundle per target in OUT/<target>/")
    b.add_argument("--calibration", metavar="DIR", help=_CALIBRATION_HELP)
    b.add_argument("--shape", action="append", default=[], metavar="[MODEL:]NAME=DIMS", help=_SHAPE_HELP)
    b.add_argument("--force", action="store_true", help="replace existing bundles in OUT")
    b.add_argument("--per-hour", type=float, default=1000.0, metavar="N",
                   help="inferences per hour for battery/energy estimates (default 1000)")
    b.add_argument("--rate", metavar="N/s", help="the same as a rate, e.g. 30/s (overrides --per-hour)")
    b.add_argument("--json", action="store_true", help="print JSON only")
    b.add_argument("--verify-on-target", action="store_true", help=_ON_TARGET_HELP)
    judging.add_args(b, gate=True, config=True)
    _time_limit_arg(b)

    c = sub.add_parser("compare", help="build all targets side by side; reports, CI budgets, baseline")
    c.add_argument("models", nargs="+", metavar="MODEL", help=".onnx model(s)")
    c.add_argument("--targets", default="all", metavar="all|T1,T2", help="targets to compare (default: all)")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder: bundles and report.{json,md,html}")
    c.add_argument("--calibration", metavar="DIR", help=_CALIBRATION_HELP)
    c.add_argument("--shape", action="append", default=[], metavar="[MODEL:]NAME=DIMS", help=_SHAPE_HELP)
    c.add_argument("--jobs", type=int, default=2, metavar="N", help="targets built in parallel (default 2)")
    c.add_argument("--force", action="store_true", help="replace existing bundles in OUT")
    c.add_argument("--baseline", metavar="REPORT", help="an earlier report.json to show the change against")
    cli_reports.budget_args(c)
    c.add_argument("--per-hour", type=float, default=1000.0, metavar="N",
                   help="inferences per hour for battery/energy estimates and budgets (default 1000)")
    c.add_argument("--rate", metavar="N/s", help="the same as a rate, e.g. 30/s (overrides --per-hour)")
    c.add_argument("--json", action="store_true", help="print the report as JSON only")
    c.add_argument("--verify-on-target", action="store_true", help=_ON_TARGET_HELP)
    judging.add_args(c, gate=False, config=False)
    _time_limit_arg(c)

    k = sub.add_parser("calibrate", help="measure this machine and write a profile that extends a base target")
    k.add_argument("-o", "--output", metavar="FILE.toml", help="profile file to write")
    k.add_argument("--check", action="append", default=[], metavar="MEASURED.json",
                   help="instead: does each bundle's latency estimate (from its profile) bracket what verify --measure "
                        "measured on the device? exit 1 if one does not")
    k.add_argument("--base", default="rpi5-cpu", metavar="T", help="built-in target to extend (default rpi5-cpu)")
    k.add_argument("--threads", type=int, default=1, metavar="N", help="intra-op threads: the profile predicts runs at N threads (default 1)")
    k.add_argument("--name", metavar="NAME", help="the new profile's name (default: <base>-calibrated)")
    k.add_argument("--quick", action="store_true", help="small sizes and time budgets (about 20 s): less accurate")

    v, g = cli_reports.add_parsers(sub, _time_limit_arg)
    e = sub.add_parser("emulator", help="the target-CPU emulator that runs Pi bundles on their own onnxruntime (aarch64)")
    esub = e.add_subparsers(dest="emulator_command", parser_class=_Parser, required=True)
    for name, text in (("setup", "prepare (once, cached) an arm64 root with the host's onnxruntime version"),
                       ("status", "show what is there and whether runs work")):
        x = esub.add_parser(name, help=text)
        x.add_argument("arch", nargs=None if name == "setup" else "?", default="aarch64", choices=["aarch64"])
        x.add_argument("--root", metavar="DIR", help="the root's folder (default: $EDGEPACK_EMULATOR_ROOT or "
                       "$XDG_CACHE_HOME/edgepack/emulator/<arch>)")
        x.add_argument("--json", action="store_true", help="print JSON")
    for command in (t, i, b, c, k, v, g, *esub.choices.values()):  # also accepted after the command
        command.add_argument("--debug", action="store_true", dest="debug_here", help=argparse.SUPPRESS)
    return p


def _time_limit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-limit", metavar="SECONDS", help="stop any one model run after this long (default 120, "
                   "or EDGEPACK_TIME_LIMIT)")


def _cmd_targets(args) -> int:
    from .target import builtin_names, load_target

    profiles = [load_target(n) for n in builtin_names()]
    if args.json:
        print(json.dumps([{
            "name": p.name, "family": p.family, "description": p.description, "engine": p.engine,
            "execution_provider": p.execution_provider, "arch": p.arch, "abi": p.abi, "format": p.format,
            "recipes": [r.name for r in p.recipes], "device": p.device.name,
        } for p in profiles], indent=2))
        return 0
    rows = [("TARGET", "RUNTIME / EP", "ABI", "FORMAT", "RECIPES (in order)", "REFERENCE DEVICE")]
    for p in profiles:
        rows.append((p.name, f"{p.engine} / {p.execution_provider}", p.abi or p.arch, p.format,
                     " > ".join(r.name for r in p.recipes), p.device.name.split(" (")[0]))
    _print_table(rows)
    return 0


def _cmd_inspect(args) -> int:
    from .analysis import inspect_model
    from .shapes import parse_shape_args
    from .target import load_targets

    profiles = load_targets(args.target)
    report = inspect_model(args.model, profiles, parse_shape_args(args.shape), per_hour=_per_hour(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from .render.text import print_inspect

        print_inspect(report)
    return 0


def _cmd_build(args) -> int:
    from . import api
    from .build import BuildResult
    from .render.text import manifest_sha256

    progress = _progress(args.json)
    outcomes = api.build(args.models, args.target, args.output, calibration=args.calibration, shapes=args.shape,
                         force=args.force, progress=progress, per_hour=_per_hour(args), keep_going=True,
                         verify_on_target=args.verify_on_target, **judging.options(args))
    if progress:
        progress.done()
    results = [r for r in outcomes if isinstance(r, BuildResult)]
    failures = [r for r in outcomes if not isinstance(r, BuildResult)]
    if args.json:
        print(json.dumps([{"target": r.target, "bundle": str(r.bundle), "build_record": str(r.record),
                           "manifest_sha256": manifest_sha256(r.bundle), "manifest": r.manifest} for r in results]
                         + [{"target": f.target, "failed": f.to_json()} for f in failures], indent=2))
    else:
        from .render.text import print_build

        print_build(results)
        for f in failures:
            print(f"{f.target}: NOT BUILT - failed at {f.stage}: {f.reason}")
    for f in failures:
        print(f"target not built: {f}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_compare(args) -> int:
    from pathlib import Path

    from . import api

    refs = "all" if args.targets == "all" else [t for t in args.targets.split(",") if t]
    if args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    progress = _progress(args.json)
    result = api.compare(args.models, refs, args.output, calibration=args.calibration, shapes=args.shape,
                         budgets=cli_reports.budget_flags(args), target_budgets=args.budget, config=args.config,
                         baseline=args.baseline, jobs=args.jobs, force=args.force, progress=progress,
                         per_hour=_per_hour(args), verify_on_target=args.verify_on_target,
                         **judging.options(args, gate_is_budget=True))
    if progress:
        progress.done()
    return cli_reports.report_outcome(result, args.json, Path(args.output))


def _cmd_emulator(args) -> int:
    import time

    from . import emulator

    if args.emulator_command == "setup":
        start = time.perf_counter()
        done = emulator.setup(args.arch, args.root, log=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
        print(f"{done['action']}: {args.arch} root at {done['root']} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    report = emulator.status(args.arch, args.root)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["runs"] else 1
    stamp = report["stamp"] or {}
    print(f"arch:        {report['arch']}")
    print(f"root:        {report['root']}" + (f" (Debian {stamp['suite']}, python {stamp['python']})" if stamp else " (not set up)"))
    print(f"onnxruntime: {stamp.get('onnxruntime', '-')} emulated, {report['host_onnxruntime']} on the host"
          + (f"; numpy {stamp['numpy']}" if stamp else ""))
    print(f"qemu-user:   {report['qemu']} on {report['host_machine']}")
    print(f"runs:        {'yes: ' + report['where'] if report['runs'] else 'no: ' + report['reason']}")
    if args.emulator_command == "setup" and not report["runs"]:
        raise emulator.EmulatorError(report["reason"])
    return 0 if report["runs"] else 1


def _per_hour(args) -> float:
    if getattr(args, "rate", None):
        text = args.rate.strip().lower()
        number, _, unit = text.partition("/")
        factor = {"s": 3600.0, "sec": 3600.0, "m": 60.0, "min": 60.0, "h": 1.0, "hour": 1.0}.get(unit or "s")
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if factor is None or value < 0:
            raise UsageError(f"--rate '{args.rate}' must look like 30/s, 120/min or 1000/h")
        return value * factor
    if args.per_hour < 0:
        raise UsageError("--per-hour must be zero or more")
    return args.per_hour


def _cmd_calibrate(args) -> int:
    from pathlib import Path

    from .estimate.calibrate import run_calibration
    from .target import load_target

    if args.check:
        if args.output:
            raise UsageError("--check compares measurements with the estimates their bundles carry; give it without -o")
        from .measure import check_files

        return check_files(args.check)
    if not args.output:
        raise UsageError("calibrate needs -o FILE.toml (or --check MEASURED.json)")
    out = Path(args.output)
    if out.suffix != ".toml":
        raise UsageError(f"-o {args.output}: the profile file must end in .toml")
    if args.threads < 1:
        raise UsageError("--threads must be 1 or more")
    if not out.parent.resolve().is_dir():
        raise UsageError(f"-o {args.output}: folder {out.parent} does not exist")
    if out.exists() and not out.is_file():
        raise UsageError(f"-o {args.output}: exists and is not a file")
    if not out.exists():  # can a file be made there at all (root passes permission checks on /proc too)?
        try:
            out.open("x").close()
            out.unlink()
        except OSError as exc:
            raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    load_target(args.base)
    print(f"measuring this machine with onnxruntime's default session options at {args.threads} thread(s): GEMM, convs "
          "by kernel/stride/groups, depthwise, int8, elementwise and transcendental ops, normalization, resize, LSTM, "
          f"memory, dispatch ({'about 20 s' if args.quick else 'under 2 minutes'})...", file=sys.stderr, flush=True)
    try:
        m = run_calibration(args.base, out, threads=args.threads, small=args.quick, name=args.name)
    except OSError as exc:
        raise OutputError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    profile = load_target(str(out))
    cpu = next(u for u in profile.device.units if u.kind == "cpu")
    print(f"wrote {out}: extends {args.base}; measured cpu " +
          ", ".join(f"{k} {v:.3g} GOPS" for k, v in sorted(cpu.peak_gops.items())) +
          f", memory {profile.device.memory_bandwidth_gbps:.3g} GB/s, cache {profile.device.cache_bytes / 1e6:.3g} MB at "
          f"{profile.device.cache_bandwidth_gbps:.3g} GB/s, dispatch {profile.device.dispatch_overhead_us:.3g} us")
    for w in m.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"use it anywhere a target name goes: edgepack inspect MODEL --target {out}")
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _progress(json_only: bool):
    from .render.progress import Progress

    return None if json_only else Progress(sys.stderr.isatty())


_COMMANDS = {"targets": _cmd_targets, "inspect": _cmd_inspect, "build": _cmd_build, "compare": _cmd_compare, "calibrate": _cmd_calibrate,
             "verify": cli_reports.cmd_verify, "merge": cli_reports.cmd_merge, "emulator": _cmd_emulator}


def main(argv: Sequence[str] | None = None) -> int:
    from . import cleanup

    debug_env = os.environ.get("EDGEPACK_DEBUG")
    try:
        with cleanup.signals():  # SIGTERM unwinds like Ctrl-C: temporary folders are removed
            return _main(argv)
    finally:  # --debug sets it for its own command only (tests call main many times in one process)
        if debug_env is None:
            os.environ.pop("EDGEPACK_DEBUG", None)
        else:
            os.environ["EDGEPACK_DEBUG"] = debug_env


def _main(argv: Sequence[str] | None) -> int:
    from .cleanup import Terminated
    from .last_resort import user_failure

    parser = _build_parser()
    args = None
    handler = None
    debug_before = os.environ.get("EDGEPACK_DEBUG")
    try:
        args = parser.parse_args(argv)
        if _debug(args):
            os.environ["EDGEPACK_DEBUG"] = "1"  # the libraries' own warnings and logs stay visible too
            handler = _log_to_stderr()
        if args.version:
            from . import __version__

            print(f"edgepack {__version__}")
            return 0
        if not args.command:
            parser.print_help()
            return 2
        return _run_command(args)
    except EdgepackError as exc:
        _traceback(args, exc)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (RecursionError, MemoryError, UnicodeError, ValueError) as exc:  # caused by input, or a bug?
        why = user_failure(exc)
        if why is None:  # not caused by the input: a bug, reported as one
            bug = InternalError(f"edgepack {getattr(args, 'command', None) or 'command line'}", exc)
            _traceback(args, exc)
            print(f"error: {bug}", file=sys.stderr)
            return bug.exit_code
        print(f"error: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)  # SIGTERM
        print(f"error: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # e.g. `edgepack inspect ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InternalError as exc:
        _traceback(args, exc)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - outside any stage: still a bug, reported as one
        bug = InternalError(f"edgepack {getattr(args, 'command', None) or 'command line'}", exc)
        _traceback(args, exc)
        print(f"error: {bug}", file=sys.stderr)
        return bug.exit_code
    finally:
        if debug_before is None:  # main() is called many times in one process (tests, the API's users):
            os.environ.pop("EDGEPACK_DEBUG", None)  # --debug lasts one command
        else:
            os.environ["EDGEPACK_DEBUG"] = debug_before
        if handler is not None:
            import logging

            log = logging.getLogger("edgepack")
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)


def _debug(args) -> bool:
    return bool(args is not None and (getattr(args, "debug", False) or getattr(args, "debug_here", False)))


def _log_to_stderr():
    """edgepack's log (stage timings, the tracebacks behind stage errors) on stderr; returns the handler."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
    log = logging.getLogger("edgepack")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return handler


def _traceback(args, exc: BaseException) -> None:
    """With --debug: the whole traceback (and the foreign error behind ours), before the error line."""
    if _debug(args):
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def _run_command(args) -> int:
    """One command with the run-time guards: its time limit, quiet libraries (EDGEPACK_DEBUG=1 keeps
    them), and the hard stop for runs that cannot be interrupted."""
    from . import limits, quiet

    limits.set_run_seconds(limits.parse_seconds(args.time_limit, "--time-limit")
                           if getattr(args, "time_limit", None) is not None else None)
    limits.run_seconds()  # a malformed EDGEPACK_TIME_LIMIT is one error before any work
    limits.enable_hard_stop(True)
    try:
        with quiet.cli_scope(args.command):
            return _COMMANDS[args.command](args)
    finally:
        limits.enable_hard_stop(False)
        limits.set_run_seconds(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
