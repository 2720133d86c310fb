"""``edgepack verify BUNDLE``: re-check a bundle's checksums, files, runtime pin, and run its models.

(Not the build's verify stage, :mod:`edgepack.stages.verify`, which checks a candidate's outputs
against the fp32 original while building.)

Problems found in the bundle (changed bytes, missing or extra files, a runtime that cannot load
the models) are findings: the command reports them all and exits 1. A folder that is not a bundle
at all (no manifest, unreadable manifest) is bad input: one line and exit 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgepackError, OutputError, first_line
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


def _load_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not bundle.is_dir():
        msg = f"bundle folder not found: {bundle}"
        raise OutputError(msg)
    if not path.is_file():
        msg = f"{bundle} is not an edgepack bundle: it has no {MANIFEST}"
        raise OutputError(msg)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path}: not valid JSON ({first_line(exc)})"
        raise OutputError(msg) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        msg = f"{path}: not an edgepack manifest (no 'artifacts' list)"
        raise OutputError(msg)
    return doc


def _inside(bundle: Path, rel: str) -> Path | None:
    p = (bundle / rel).resolve()
    try:
        p.relative_to(bundle.resolve())
    except ValueError:
        return None
    return p


def _check_files(bundle: Path, doc: dict, f: Findings) -> None:
    listed = set()
    for a in doc["artifacts"]:
        rel = str(a.get("path", ""))
        listed.add(rel)
        p = _inside(bundle, rel)
        if p is None:
            f.problems.append(f"artifact path '{rel}' points outside the bundle")
            continue
        if not p.is_file():
            f.problems.append(f"missing file: {rel}")
            continue
        if p.stat().st_size != a.get("bytes"):
            f.problems.append(f"changed file: {rel} has {p.stat().st_size} bytes, the manifest says {a.get('bytes')}")
        elif sha256_file(p) != a.get("sha256"):
            f.problems.append(f"changed file: {rel} does not match its sha256 in the manifest")
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in listed:
            f.problems.append(f"extra file not in the manifest: {rel}")
    f.checked.append(f"{len(listed)} files against their sha256")


def _check_runtime(doc: dict, f: Findings):
    """The backend of the manifest's engine (from edgepack's own table, never an import of what the
    manifest names), if its runtime is installed here."""
    from .backends import backend_named

    engine = str(doc.get("target", {}).get("engine", "onnxruntime"))
    try:
        backend = backend_named(engine)
    except EdgepackError as exc:
        msg = f"{bundle_name(doc)}: {exc}"
        raise OutputError(msg) from None
    pinned = doc.get("toolchain", {}).get(engine)
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


def _feed(specs: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    feed = {}
    for s in specs:
        shape = tuple(d if isinstance(d, int) else 1 for d in (s.get("shape") or []))
        dtype = np.dtype(s.get("dtype", "float32"))
        if np.issubdtype(dtype, np.floating):
            feed[s["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[s["name"]] = np.ones(shape, np.bool_)
        else:
            feed[s["name"]] = np.zeros(shape, dtype)
    return feed


def _input_specs(entry: dict) -> list[dict]:
    shipped = entry.get("shipped_inputs")
    if isinstance(shipped, dict):  # fixed shapes: {name: dims}
        by_name = {s["name"]: s for s in entry["source_model"]["inputs"]}
        return [{**by_name[n], "shape": dims} for n, dims in shipped.items() if n in by_name]
    return entry["source_model"]["inputs"]


def _run_models(bundle: Path, doc: dict, backend, f: Findings) -> None:
    for entry in doc.get("models", []):
        rel = entry.get("artifact")
        p = _inside(bundle, rel or "")
        if p is None or not p.is_file():
            continue  # already reported
        feed = _feed(_input_specs(entry))
        try:
            backend.run_bundled(p, doc, feed)
        except Exception as exc:  # noqa: BLE001 - any runtime failure is a finding
            f.problems.append(f"{rel} does not run: {first_line(exc)[:300]}")
            continue
        f.checked.append(f"{rel} loads and runs on generated inputs ({backend.name}, CPU)")


def check_bundle(bundle: str | Path) -> Findings:
    bundle = Path(bundle)
    doc = _load_manifest(bundle)
    f = Findings(bundle=str(bundle))
    _check_files(bundle, doc, f)
    backend = _check_runtime(doc, f)
    if backend is not None and not any(p.startswith(("missing", "changed")) for p in f.problems):
        _run_models(bundle, doc, backend, f)
    return f
