"""``edgepack verify BUNDLE``: re-check a bundle's checksums, files, runtime pin, and run its models.

(Not the build's verify stage, :mod:`edgepack.stages.verify`, which checks a candidate's outputs
against the fp32 original while building.)

Problems found in the bundle (changed bytes, missing or extra files, a runtime that cannot load
the models) are findings: the command reports them all and exits 1. A folder that is not a bundle
at all (no manifest, unreadable manifest) is bad input: one line and exit 2. The manifest is
untrusted: every field is type-checked by :mod:`edgepack.manifest_checks`, the runtime comes from a
fixed table (never imported by the name a manifest gives), and every run has the time limit.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import manifest_checks as mc
from .errors import TimeLimitError, UsageError, first_line
from .model import sha256_file

MANIFEST = "manifest.json"


@dataclass
class Findings:
    bundle: str
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    measurement: dict | None = None  # verify --measure: edgepack.measure's record
    measurement_skipped: str | None = None

    def to_json(self) -> dict:
        out = {"bundle": self.bundle, "ok": self.ok, "checked": self.checked, "problems": self.problems}
        if self.measurement is not None or self.measurement_skipped:
            out["measurement"] = self.measurement
        return out


def _inside(bundle: Path, rel: str) -> Path | None:
    p = (bundle / rel).resolve()
    try:
        p.relative_to(bundle.resolve())
    except ValueError:
        return None
    return p


def _check_files(bundle: Path, checked: mc.Checked, f: Findings) -> None:
    for a in checked.artifacts:
        p = _inside(bundle, a.path)
        if p is None:
            f.problems.append(f"artifact path '{a.path}' points outside the bundle")
            continue
        st = mc.regular_file(bundle / a.path)
        if st is None:
            f.problems.append(f"missing file: {a.path}" + ("" if not os.path.lexists(bundle / a.path) else
                                                           " (what is there is not a regular file)"))
            continue
        if st.st_size != a.bytes:
            f.problems.append(f"changed file: {a.path} has {st.st_size} bytes, the manifest says {a.bytes}")
        elif sha256_file(bundle / a.path) != a.sha256:
            f.problems.append(f"changed file: {a.path} does not match its sha256 in the manifest")
    f.problems.extend(mc.odd_entries(bundle, checked.listed))
    f.checked.append(f"{len(checked.artifacts)} files against their sha256")


def _check_runtime(checked: mc.Checked, f: Findings):
    """The backend of the manifest's engine (from edgepack's own table, never an import of what the
    manifest names; an unknown engine is already a finding), if its runtime is installed here."""
    from .backends import backend_named

    engine = checked.engine
    if engine is None:
        return None
    backend = backend_named(engine)
    pinned = checked.pinned
    have = backend.installed_version()
    if have is None:
        f.problems.append(f"the bundle needs {engine}, which is not installed here")
        return None
    problem = backend.pin_problem(pinned, have)
    if problem:
        f.problems.append(problem)
    f.checked.append(f"runtime pin: {engine} {pinned} (installed {have})")
    return backend


def bundle_name(doc: dict) -> str:
    return f"bundle of target '{doc.get('target', {}).get('name', '?')}'"


def _feed(inputs) -> dict:
    rng = np.random.default_rng(0)
    feed = {}
    for name, dtype_name, shape in inputs:
        dtype = np.dtype(dtype_name)
        if np.issubdtype(dtype, np.floating):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[name] = np.ones(shape, np.bool_)
        else:
            feed[name] = np.zeros(shape, dtype)
    return feed


def read_reference(bundle: Path, tensors) -> dict[str, np.ndarray]:
    from .reference import from_bytes

    out = {}
    for t in tensors:
        with open(bundle / t.file, "rb") as fh:  # listed, checksummed and a regular file (checked before)
            out[t.name] = from_bytes(fh.read(), t.dtype, list(t.shape))
    return out


def _run_models(bundle: Path, checked: mc.Checked, backend, f: Findings) -> None:
    from . import reference

    for run in checked.models:
        p = _inside(bundle, run.artifact)
        if p is None or mc.regular_file(bundle / run.artifact) is None:
            continue  # already reported
        ref = run.reference
        try:
            feed = read_reference(bundle, ref.inputs) if ref else _feed(run.inputs)
            expected = read_reference(bundle, ref.outputs) if ref else None
        except (OSError, ValueError) as exc:
            f.problems.append(f"{run.artifact}: its reference pair cannot be read: {first_line(exc)}")
            continue
        try:
            got = backend.run_bundled(p, checked.session_config, feed, run.artifact)
        except TimeLimitError as exc:
            f.problems.append(str(exc).split("; if the model")[0])
            continue
        except Exception as exc:  # noqa: BLE001 - any runtime failure is a finding
            f.problems.append(f"{run.artifact} does not run: {first_line(exc)[:300]}")
            continue
        if expected is None:
            f.checked.append(f"{run.artifact} loads and runs on generated inputs ({backend.host_runtime}; the bundle has no "
                             "reference pair)")
            continue
        if got is None:
            f.checked.append(f"{run.artifact} loads and runs on its reference input ({backend.host_runtime}; "
                             "outputs not compared)")
            continue
        ok, why = reference.check(expected, got, ref.rule)
        if ok:
            f.checked.append(f"{run.artifact} runs on its reference input and {why} ({backend.host_runtime})")
        else:
            f.problems.append(f"{run.artifact} on its reference input: {why} (the fp32 original's output on the "
                              "same input, the recipe's tolerance)")


def _run_on_target(bundle: Path, checked: mc.Checked, spec: dict, f: Findings) -> None:
    """``--on-target``: each model on its reference input on the target's own runtime build under emulation."""
    from . import emulator, on_target, reference

    for run in checked.models:
        p = _inside(bundle, run.artifact)
        ref = run.reference
        if p is None or ref is None or mc.regular_file(bundle / run.artifact) is None:
            continue  # reported by the host run
        try:
            got, where = on_target.run_bundle(p, checked.session_config, read_reference(bundle, ref.inputs), spec)
            expected = read_reference(bundle, ref.outputs)
        except (OSError, ValueError, emulator.EmulatedRunError) as exc:
            f.problems.append(f"{run.artifact} on the target's runtime under emulation: {first_line(exc)[:300]}")
            continue
        ok, why = reference.check(expected, got, ref.rule)
        if ok:
            f.checked.append(f"{run.artifact} runs on its reference input and {why} (on {where})")
        else:
            f.problems.append(f"{run.artifact} on its reference input on {where}: {why}")


def parse_sha256(text: str) -> str:
    """A ``--manifest-sha256`` value: 64 hex digits (any case)."""
    value = text.strip().lower()
    if not mc.SHA256.match(value):
        msg = f"--manifest-sha256 {text[:80]!r} must be 64 hexadecimal digits (the build prints it)"
        raise UsageError(msg)
    return value


def bundles_in(folder: Path) -> list[str]:
    """Names of the subfolders of ``folder`` that hold a manifest.json (regular file): the bundles of an OUT."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [e.name for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            and mc.regular_file(Path(e.path) / MANIFEST) is not None]


def _refuse_output_folder(folder: Path) -> None:
    """``verify OUT`` instead of ``verify OUT/<target>``: name the bundles found there."""
    if mc.regular_file(folder / MANIFEST) is not None or not folder.is_dir():
        return
    found = bundles_in(folder)
    if found:
        listed = ", ".join(str(folder / name) for name in found)
        msg = (f"{folder} is an output folder, not a bundle; it holds {len(found)} bundle(s): {listed} - "
               "verify one of them")
        from .errors import OutputError

        raise OutputError(msg)


def check_bundle(bundle: str | Path, manifest_sha256: str | None = None, on_target: bool = False, *,
                 measure: bool = False, runs: int | None = None, threads: int | None = None) -> Findings:
    """Every check; ``on_target``: also on the target's own runtime build under emulation; with ``measure``
    (and no problem found) also the bundle's latency on this machine with its own runtime and execution
    provider (``findings.measurement``, see :mod:`edgepack.measure`)."""
    bundle = Path(bundle)
    pin = parse_sha256(manifest_sha256) if manifest_sha256 is not None else None
    _refuse_output_folder(bundle)
    doc, raw = mc.read_manifest(bundle)
    f = Findings(bundle=str(bundle))
    if pin is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != pin:
            f.problems.append(f"{MANIFEST} has sha256 {digest}, not the pinned {pin}: the manifest was changed")
        else:
            f.checked.append(f"{MANIFEST} matches the pinned sha256")
    checked = mc.check(doc, f.problems)
    spec = _on_target_spec(doc, checked) if on_target else None  # an error (exit 2) before any run
    _check_files(bundle, checked, f)
    backend = _check_runtime(checked, f)
    if backend is not None and not any(p.startswith(("missing", "changed")) for p in f.problems):
        _run_models(bundle, checked, backend, f)
        if spec is not None:
            _run_on_target(bundle, checked, spec, f)
    if measure:
        _measure(bundle, doc, raw, checked, backend, f, runs, threads)
    return f


def _on_target_spec(doc: dict, checked: mc.Checked) -> dict:
    from . import on_target
    from .backends import BACKENDS

    return on_target.bundle_spec(doc, BACKENDS.get(checked.engine) if checked.engine else None)


def _measure(bundle: Path, doc: dict, raw: bytes, checked, backend, f: Findings, runs, threads) -> None:
    from . import measure as m
    from .errors import EdgepackError

    if f.problems or backend is None:
        f.measurement_skipped = "not measured: the bundle has problems (above)"
        return
    try:
        f.measurement = m.measure(bundle, doc, raw, checked, backend, runs=runs or m.DEFAULT_RUNS, threads=threads)
    except (EdgepackError, OSError, ValueError) as exc:
        f.problems.append(f"measurement failed: {m.measure_error(exc)}")
        return
    failed = [c for c in f.measurement["reference_check"] if ": FAILED: " in c]
    if failed:
        f.problems.append(f"on {f.measurement['provider']}: {failed[0]}")
