"""``edgepack verify BUNDLE``: re-check a bundle's checksums, files, runtime pin, and run its models.

Problems found in the bundle (changed bytes, missing or extra files, a runtime that cannot load
the models) are findings: the command reports them all and exits 1. A folder that is not a bundle
at all (no manifest, unreadable manifest) is bad input: one line and exit 2. The manifest is
untrusted: every field is type-checked by :mod:`edgepack.manifest_checks`, the runtime comes from a
fixed table (never imported by the name a manifest gives), and every run has the time limit.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import limits, quiet
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

    def to_json(self) -> dict:
        return {"bundle": self.bundle, "ok": self.ok, "checked": self.checked, "problems": self.problems}


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


def _check_runtime(checked: mc.Checked, f: Findings) -> str | None:
    engine = checked.engine
    if engine is None:
        return None  # reported by manifest_checks: an unknown engine is never imported
    module_name = mc.ENGINES[engine][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        f.problems.append(f"the bundle needs {engine}, which is not installed here")
        return None
    have = getattr(module, "__version__", "?")
    pinned = checked.pinned
    if engine == "onnxruntime" and pinned and have != pinned:
        f.problems.append(f"the .ort files were written by onnxruntime {pinned}; this runtime is {have} "
                          "(ORT-format models are tied to the version that wrote them, onnxruntime#8044)")
    f.checked.append(f"runtime pin: {engine} {pinned} (installed {have})")
    return engine


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


def _run_one(p: Path, run: mc.ModelRun, engine: str, config: dict[str, str]) -> None:
    feed = _feed(run.inputs)
    if engine == "openvino":
        import openvino as ov

        request = ov.Core().compile_model(str(p), "CPU").create_infer_request()
        limits.run_openvino(request, feed, run.artifact)
        return
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = quiet.ort_severity()
    for k, v in config.items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    limits.run_ort(sess, feed, run.artifact)


def _run_models(bundle: Path, checked: mc.Checked, engine: str, f: Findings) -> None:
    for run in checked.models:
        p = _inside(bundle, run.artifact)
        if p is None or mc.regular_file(bundle / run.artifact) is None:
            continue  # already reported
        try:
            _run_one(p, run, engine, checked.session_config)
        except TimeLimitError as exc:
            f.problems.append(str(exc).split("; if the model")[0])
            continue
        except Exception as exc:  # noqa: BLE001 - any runtime failure is a finding
            f.problems.append(f"{run.artifact} does not run: {first_line(exc)[:300]}")
            continue
        f.checked.append(f"{run.artifact} loads and runs on generated inputs ({engine}, CPU)")


def parse_sha256(text: str) -> str:
    """A ``--manifest-sha256`` value: 64 hex digits (any case)."""
    value = text.strip().lower()
    if not mc.SHA256.match(value):
        msg = f"--manifest-sha256 {text[:80]!r} must be 64 hexadecimal digits (the build prints it)"
        raise UsageError(msg)
    return value


def verify_bundle(bundle: str | Path, manifest_sha256: str | None = None) -> Findings:
    bundle = Path(bundle)
    pin = parse_sha256(manifest_sha256) if manifest_sha256 is not None else None
    doc, raw = mc.read_manifest(bundle)
    f = Findings(bundle=str(bundle))
    if pin is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != pin:
            f.problems.append(f"{MANIFEST} has sha256 {digest}, not the pinned {pin}: the manifest was changed")
        else:
            f.checked.append(f"{MANIFEST} matches the pinned sha256")
    checked = mc.check(doc, f.problems)
    _check_files(bundle, checked, f)
    engine = _check_runtime(checked, f)
    if engine is not None and not any(p.startswith(("missing", "changed")) for p in f.problems):
        _run_models(bundle, checked, engine, f)
    return f
