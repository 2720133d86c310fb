"""A bundle handed to ``edgepack verify`` is untrusted input: read its manifest field by field.

Nothing a manifest says is executed or imported: the runtime comes from a fixed table
(:data:`ENGINES`), session settings from a fixed allow-list, generated inputs from a fixed set of
dtypes with a size cap. A field of the wrong type or value is a *finding* (the bundle is not what
edgepack wrote: exit 1); a folder that is not a bundle at all (no manifest, not JSON) is bad input
(exit 2). The walk over the bundle's folder never follows symlinks and never opens anything that
is not a regular file, so a FIFO cannot hang it and a link cannot lead it out.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import OutputError, first_line
from .profile_checks import control_char

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20
# engine named in a manifest -> (module verify imports, artifact suffix it runs); nothing else is imported
def engines() -> dict[str, str]:
    """{engine: the suffix of the models its bundles ship}, from edgepack's fixed backends table."""
    from .backends import BACKENDS

    return {name: b.bundle_suffix for name, b in BACKENDS.items()}


DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "bool")
MAX_INPUT_ELEMENTS = 2**26  # per input of a generated verification feed (256 MB of float32)
SESSION_CONFIG = {"session.enable_saved_runtime_optimizations": ("0", "1")}  # what edgepack writes
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Artifact:
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class RefTensor:
    name: str
    file: str  # bundle-relative, listed in 'artifacts' (so its bytes were checked)
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Reference:
    """A model's reference pair (edgepack.reference), type-checked."""

    inputs: tuple[RefTensor, ...]
    outputs: tuple[RefTensor, ...]
    rule: dict  # equal_within, cosine_min (numbers), same_top1 (bool)


@dataclass(frozen=True)
class ModelRun:
    artifact: str
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]  # (name, dtype, shape) of a generated feed
    reference: Reference | None = None


@dataclass
class Checked:
    artifacts: list[Artifact] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)  # every path the manifest lists, valid or not
    engine: str | None = None
    pinned: str | None = None
    models: list[ModelRun] = field(default_factory=list)
    session_config: dict[str, str] = field(default_factory=dict)
    provider: str | None = None  # runtime.execution_provider, one the engine's backend serves
    provider_options: dict[str, str] = field(default_factory=dict)  # as strings (booleans "1"/"0")
    config_file: str | None = None  # runtime.config_file (OpenVINO), a listed file


def read_manifest(bundle: Path) -> tuple[dict, bytes]:
    """(document, raw bytes) of ``bundle/manifest.json``; OutputError if the folder is not a bundle."""
    path = bundle / MANIFEST
    try:
        st_dir = os.stat(bundle)
    except (OSError, ValueError):
        st_dir = None
    if st_dir is None or not stat.S_ISDIR(st_dir.st_mode):
        msg = f"bundle folder not found: {bundle}"
        raise OutputError(msg)
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        what = "no" if st is None else "a non-regular (symlink, FIFO, folder...)"
        msg = f"{bundle} is not an edgepack bundle: it has {what} {MANIFEST}"
        raise OutputError(msg)
    if st.st_size > MAX_MANIFEST_BYTES:
        msg = f"{path}: {st.st_size:,} bytes; an edgepack manifest is far smaller (limit {MAX_MANIFEST_BYTES:,})"
        raise OutputError(msg)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        doc = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror or exc}"
        raise OutputError(msg) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{path}: not valid JSON ({first_line(exc)})"
        raise OutputError(msg) from exc
    except RecursionError as exc:
        msg = f"{path}: not an edgepack manifest (JSON nested too deeply)"
        raise OutputError(msg) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
        msg = f"{path}: not an edgepack manifest (no 'artifacts' list)"
        raise OutputError(msg)
    return doc, raw


def _safe_rel(value: Any) -> str | None:
    """A bundle-relative POSIX path with no '..', no absolute part, no control characters; else None."""
    if not isinstance(value, str) or not value or control_char(value) or "\\" in value:
        return None
    p = PurePosixPath(value)
    if p.is_absolute() or any(part in ("..", ".", "") for part in value.split("/")):
        return None
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _artifacts(doc: dict, c: Checked, problems: list[str]) -> None:
    for i, a in enumerate(doc["artifacts"]):
        if not isinstance(a, dict):
            problems.append(f"artifacts[{i}] is not an object")
            continue
        rel = _safe_rel(a.get("path"))
        if isinstance(a.get("path"), str):
            c.listed.add(a["path"])
        if rel is None:
            problems.append(f"artifacts[{i}] path {a.get('path')!r} is not a plain path inside the bundle")
            continue
        size, digest = a.get("bytes"), a.get("sha256")
        if not _is_int(size) or size < 0 or not isinstance(digest, str) or not SHA256.match(digest):
            problems.append(f"artifacts[{i}] ({rel}) needs 'bytes' (an integer) and 'sha256' (64 hex digits)")
            continue
        c.artifacts.append(Artifact(rel, size, digest))


def _engine(doc: dict, c: Checked, problems: list[str]) -> None:
    target = doc.get("target")
    engine = target.get("engine", "onnxruntime") if isinstance(target, dict) else None
    known = engines()
    if not isinstance(engine, str) or engine not in known:  # a list or dict here must not crash the lookup
        shown = repr(engine)[:60] if engine is not None else "none (no 'target' object)"
        problems.append(f"target.engine {shown} is not a runtime edgepack packages ({', '.join(known)}); "
                        "nothing was imported or run")
        return
    c.engine = engine
    toolchain = doc.get("toolchain")
    pinned = toolchain.get(engine) if isinstance(toolchain, dict) else None
    if pinned is not None and not isinstance(pinned, str):
        problems.append(f"toolchain.{engine} is not a version string")
        pinned = None
    c.pinned = pinned


def _dims(shape: Any) -> tuple[int, ...] | None:
    if not isinstance(shape, list):
        return None
    dims = []
    for d in shape:
        if _is_int(d):
            if not 0 <= d <= 2**31:
                return None
            dims.append(d)
        elif d is None or isinstance(d, str):
            dims.append(1)  # a dynamic dimension: fed with 1
        else:
            return None
    return tuple(dims)


def _model_inputs(entry: dict, where: str, problems: list[str]) -> tuple | None:
    source = entry.get("source_model")
    specs = source.get("inputs") if isinstance(source, dict) else None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        problems.append(f"{where}: 'source_model.inputs' is not a list of objects")
        return None
    shipped = entry.get("shipped_inputs")
    fixed = shipped if isinstance(shipped, dict) else {}
    out = []
    for s in specs:
        name, dtype = s.get("name"), s.get("dtype", "float32")
        if not isinstance(name, str) or dtype not in DTYPES:
            problems.append(f"{where}: input {str(name)[:60]!r} has no name or an unknown dtype {str(dtype)[:30]!r}")
            return None
        dims = _dims(fixed.get(name, s.get("shape") or []))
        if dims is None:
            problems.append(f"{where}: input {name[:60]!r} has a malformed shape")
            return None
        n = 1
        for d in dims:
            n *= d
        if n > MAX_INPUT_ELEMENTS:
            problems.append(f"{where}: input {name[:60]!r} has {n:,} elements; verify feeds at most {MAX_INPUT_ELEMENTS:,}")
            return None
        out.append((name, dtype, dims))
    return tuple(out)


def _models(doc: dict, c: Checked, problems: list[str]) -> None:
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        problems.append("the manifest lists no models ('models' is missing, empty or not a list): nothing was run")
        return
    suffix = engines()[c.engine] if c.engine else None
    valid = {a.path for a in c.artifacts}
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        rel = _safe_rel(entry.get("artifact"))
        if rel is None or rel not in valid:
            problems.append(f"{where}: artifact {str(entry.get('artifact'))[:80]!r} is not a file listed in 'artifacts'")
            continue
        if suffix and not rel.endswith(suffix):
            problems.append(f"{where}: artifact {rel} is not a {suffix} file, which is what {c.engine} bundles ship")
            continue
        inputs = _model_inputs(entry, where, problems)
        if inputs is not None:
            c.models.append(ModelRun(rel, inputs, _reference(entry.get("reference"), where, valid, inputs, problems)))


def _ref_tensors(items: Any, where: str, valid: set[str]) -> tuple[RefTensor, ...] | str:
    from .reference import DTYPES as REF_DTYPES

    if not isinstance(items, list) or not items:
        return "is not a non-empty list"
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            return f"[{i}] is not an object with a name"
        rel = _safe_rel(t.get("file"))
        if rel is None or rel not in valid:
            return f"[{i}] file {str(t.get('file'))[:80]!r} is not a file listed in 'artifacts'"
        if t.get("dtype") not in REF_DTYPES:
            return f"[{i}] dtype {str(t.get('dtype'))[:30]!r} is not one of {', '.join(REF_DTYPES)}"
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d <= 2**31 for d in shape):
            return f"[{i}] shape is not a list of dimensions"
        n = 1
        for d in shape:
            n *= d
        if n > MAX_INPUT_ELEMENTS:
            return f"[{i}] has {n:,} elements; verify reads at most {MAX_INPUT_ELEMENTS:,}"
        out.append(RefTensor(t["name"], rel, t["dtype"], tuple(shape)))
    return tuple(out)


def _reference(doc: Any, where: str, valid: set[str], inputs: tuple, problems: list[str]) -> Reference | None:
    """The model's reference pair; None (no finding) when the manifest has none (bundles before it existed)."""
    if doc is None:
        return None
    where = f"{where}.reference"
    if not isinstance(doc, dict):
        problems.append(f"{where} is not an object")
        return None
    parts = {}
    for key in ("inputs", "outputs"):
        got = _ref_tensors(doc.get(key), where, valid)
        if isinstance(got, str):
            problems.append(f"{where}.{key}{got if got.startswith('[') else ' ' + got}")
            return None
        parts[key] = got
    if sorted(t.name for t in parts["inputs"]) != sorted(name for name, _, _ in inputs):
        problems.append(f"{where}.inputs do not name the model's inputs")
        return None
    rule = doc.get("check")
    ok = isinstance(rule, dict) and all(
        (isinstance(rule.get(k), (int, float)) and not isinstance(rule.get(k), bool) and rule[k] == rule[k])
        for k in ("equal_within", "cosine_min") if k in rule) and isinstance(rule.get("same_top1", False), bool)
    if not ok or "equal_within" not in rule:
        problems.append(f"{where}.check is not an object of numbers (equal_within, cosine_min) and same_top1")
        return None
    return Reference(parts["inputs"], parts["outputs"], {k: rule[k] for k in ("equal_within", "cosine_min", "same_top1")
                                                         if k in rule})


def _session_config(doc: dict, c: Checked, problems: list[str]) -> None:
    runtime = doc.get("runtime")
    config = runtime.get("session_config", {}) if isinstance(runtime, dict) else {}
    if not isinstance(config, dict):
        problems.append("runtime.session_config is not an object; not applied")
        return
    for key, value in config.items():
        if key in SESSION_CONFIG and str(value) in SESSION_CONFIG[key]:
            c.session_config[key] = str(value)
        else:
            problems.append(f"runtime.session_config {str(key)[:60]!r} = {str(value)[:30]!r} is not a setting edgepack "
                            "writes; not applied")


_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _provider(doc: dict, c: Checked, problems: list[str]) -> None:
    """The execution provider and its options, for ``verify --measure``: a provider the engine's backend
    serves, options with plain names and short scalar values (onnxruntime refuses unknown ones)."""
    from .backends import BACKENDS

    runtime = doc.get("runtime")
    if not isinstance(runtime, dict) or c.engine is None:
        return
    provider = runtime.get("execution_provider")
    served = BACKENDS[c.engine].execution_providers
    if provider is not None and provider not in served:
        problems.append(f"runtime.execution_provider {str(provider)[:40]!r} is not one {c.engine} serves "
                        f"({', '.join(served)})")
        return
    c.provider = provider
    options = runtime.get("provider_options") or {}
    if not isinstance(options, dict):
        problems.append("runtime.provider_options is not an object; not applied")
        return
    for key, value in options.items():
        if not _OPTION_KEY.match(str(key)) or isinstance(value, (dict, list)) or value is None or len(str(value)) > 64:
            problems.append(f"runtime.provider_options {str(key)[:60]!r} is not a plain option; not applied")
            continue
        c.provider_options[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    config = runtime.get("config_file")
    if config is not None:
        rel = _safe_rel(config)
        if rel is None or rel not in {a.path for a in c.artifacts}:
            problems.append(f"runtime.config_file {str(config)[:80]!r} is not a file listed in 'artifacts'")
        else:
            c.config_file = rel


def check(doc: dict, problems: list[str]) -> Checked:
    """The fields verify uses, type-checked; what is wrong is appended to ``problems``."""
    c = Checked()
    _artifacts(doc, c, problems)
    _engine(doc, c, problems)
    _models(doc, c, problems)
    _session_config(doc, c, problems)
    _provider(doc, c, problems)
    return c


def regular_file(path: Path) -> os.stat_result | None:
    """lstat of ``path`` if it is a regular file (not a symlink, FIFO, device or folder)."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return name
    return "not a regular file"


def odd_entries(bundle: Path, listed: set[str]) -> list[str]:
    """Everything in the bundle that edgepack did not put there: extra files, folders that hold no
    listed file, and anything that is not a regular file (symlinks in or out, dangling links, FIFOs,
    sockets, devices). Symlinks are reported, never followed."""
    parents = {str(PurePosixPath(p).parent) for p in listed} | {"."}
    for p in list(parents):
        parts = PurePosixPath(p).parts
        parents |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    found = []
    for dirpath, dirnames, filenames in os.walk(bundle, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = base / name
            rel = p.relative_to(bundle).as_posix()
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if rel not in parents:
                    found.append(f"extra folder not in the manifest: {rel}/")
            elif not stat.S_ISREG(mode):
                what = _kind(mode)
                if stat.S_ISLNK(mode):
                    target = os.readlink(p)
                    what += f" to {target!r}" + ("" if p.exists() else " (dangling)")
                found.append(f"{rel} is {what}; a bundle holds regular files only")
            elif rel != MANIFEST and rel not in listed:
                found.append(f"extra file not in the manifest: {rel}")
    return found

