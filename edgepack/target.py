"""Target profiles: TOML files in ``targets/`` (or a user's own file), validated by hand.

A profile says what runtime and execution provider the device uses, what shapes
and quantization recipes suit it, how to convert, how to build a minimal runtime,
and the hardware figures (each with its public source) that estimates use.
``extends = "<name or path>"`` lets a user's file change only what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import _toml_check as tc
from . import profile_checks
from ._toml_check import Field, ListOf, TableOf
from .backends import BACKENDS
from .errors import ProfileError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# what the backends serve (edgepack.backends.BACKENDS is the one list of engines)
ENGINES = tuple(BACKENDS)
EXECUTION_PROVIDERS = tuple(ep for b in BACKENDS.values() for ep in b.execution_providers)
OP_TABLES = tuple(t for b in BACKENDS.values() for t in b.op_tables)
FORMATS = tuple(f for b in BACKENDS.values() for f in b.formats)
ACCELERATOR_EPS = tuple(ep for b in BACKENDS.values() for ep in b.accelerator_providers)  # hand nodes to an NPU/GPU
RECIPES = ("static-int8", "static-w8a16", "fp16", "dynamic-int8", "none")
# what each recipe computes in ("int16": int8 weights with 16-bit activations, QNN's w8a16)
PRECISION_OF = {"static-int8": "int8", "static-w8a16": "int16", "dynamic-int8": "int8", "fp16": "fp16", "none": "fp32"}
RECIPES_NEEDING_CALIBRATION = ("static-int8", "static-w8a16")
APPLIES_TO = ("any", "matmul-heavy", "conv-heavy")
PRECISIONS = ("fp32", "fp16", "int8", "int16")
STOCK_INDEXES = ("pypi", "maven", "cocoapods")  # where the stock runtime package is published
STOCK_SIZE_SOURCES = ("published", "measured")  # estimate/size.py's published figures, targets/data/runtime_sizes.json

_TOLERANCE = {
    "cosine_min": Field(float, minimum=0.0, maximum=1.0),
    "top1_agreement_min": Field(float, minimum=0.0, maximum=1.0),
    "max_accuracy_drop": Field(float, minimum=0.0),
    "class_agreement_min": Field(float, minimum=0.0, maximum=1.0),
    "sequence_agreement_min": Field(float, minimum=0.0, maximum=1.0),
    "pixel_agreement_min": Field(float, minimum=0.0, maximum=1.0),
    "mask_iou_min": Field(float, minimum=0.0, maximum=1.0),
    "box_agreement_min": Field(float, minimum=0.0, maximum=1.0),
}
_RECIPE = {
    "name": Field(str, required=True, choices=RECIPES),
    "applies_to": Field(str, choices=APPLIES_TO),
    "activation_type": Field(str, choices=("uint8", "int8")),
    "weight_type": Field(str, choices=("uint8", "int8")),
    "per_channel": Field(bool),
    "reason": Field(str),
    "tolerance": _TOLERANCE,
}
_UNIT = {
    "kind": Field(str, required=True, choices=("cpu", "npu", "gpu")),
    "cores": Field(int, minimum=1),
    "peak_gops": TableOf(Field(float, minimum=0.0)),
    "active_w": Field(float, minimum=0.0),
}
SCHEMA: dict[str, Any] = {
    "name": Field(str, required=True),
    "description": Field(str),
    "family": Field(str, required=True, choices=("android", "ios", "intel", "linux-arm")),
    "extends": Field(str),
    "runtime": {
        "engine": Field(str, required=True, choices=ENGINES),
        "execution_provider": Field(str, required=True, choices=EXECUTION_PROVIDERS),
        "provider_options": TableOf(Field((str, int, bool))),
        "op_table": Field(str, required=True, choices=OP_TABLES),
        "max_rank": Field(int, minimum=1),
        "device": Field(str),
    },
    "isa": {
        "arch": Field(str, required=True, choices=("arm64", "x86_64")),
        "abi": Field(str),
        "cpu": Field(str),
        "features": Field(list, item_type=str),
    },
    "shapes": {
        "policy": Field(str, required=True, choices=("fixed", "dynamic")),
        "default_batch": Field(int, minimum=1),
    },
    "quantization": ListOf(_RECIPE),
    "conversion": {
        "format": Field(str, required=True, choices=FORMATS),
        "optimization_style": Field(str, choices=("runtime", "fixed")),
        "optimization_level": Field(str, choices=("basic", "extended", "all")),
        "target_platform": Field(str, choices=("arm", "amd64")),
        "compress_to_fp16": Field(bool),
    },
    "minimal_build": {
        "level": Field(str, required=True, choices=("none", "minimal", "extended")),
        "flags": Field(list, item_type=str),
        "package": Field(str),
        "stock_package": Field(str),
        "stock_index": Field(str, choices=STOCK_INDEXES),
        "stock_size": Field(str, required=True),
        "stock_size_note": Field(str),
        "ci_runner": Field(str),
    },
    # the onnxruntime session the latency estimates model (edgepack/estimate/params.py)
    "estimate": {
        "optimization_level": Field(str, choices=("basic", "extended", "all")),
        "layout": Field(str, choices=("nchw", "nchwc")),
        "threads": Field(int, minimum=1),
        "note": Field(str),
    },
    "device": {
        "name": Field(str, required=True),
        "idle_w": Field(float, minimum=0.0),
        "memory_bandwidth_gbps": Field(float, minimum=0.0),
        "cache_bytes": Field(float, minimum=0.0),
        "cache_bandwidth_gbps": Field(float, minimum=0.0),
        "dispatch_overhead_us": Field(float, minimum=0.0),
        "partition_switch_us": Field(float, minimum=0.0),
        "battery_wh": Field(float, minimum=0.0),
        "battery_v": Field(float, minimum=0.0),
        "power_bank_wh": Field(float, minimum=0.0),
        "units": TableOf(_UNIT),
        # cost-model parameters measured on the device by `edgepack calibrate` (edgepack/estimate/params.py)
        "cost_model": TableOf(Field(float, minimum=0.0)),
        "sources": TableOf(Field(str)),
        "anchors": ListOf(
            {
                "model": Field(str, required=True),
                "precision": Field(str, required=True, choices=PRECISIONS),
                "latency_ms": Field(float, required=True, minimum=0.0),
                "runtime": Field(str, required=True),
                "source": Field(str, required=True),
                # why the estimate's band does not hold this figure (another runtime, no local model...)
                "gap": Field(str),
            }
        ),
    },
}


@dataclass(frozen=True)
class Tolerance:
    """A recipe's bars, per output kind (edgepack.metrics.bars: which apply to which kind, and the
    defaults of those left None); ``max_accuracy_drop`` bounds the drop of the user's own metric (--eval)."""

    cosine_min: float = 0.99  # embeddings
    top1_agreement_min: float | None = None  # classes, every decision
    max_accuracy_drop: float | None = None  # --eval: fp32 value minus the candidate's (in the metric's units)
    class_agreement_min: float | None = None  # classes, confident decisions
    sequence_agreement_min: float | None = None  # sequences, decoded
    pixel_agreement_min: float | None = None  # maps, thresholded pixels
    mask_iou_min: float | None = None  # maps, IoU of the thresholded masks
    box_agreement_min: float | None = None  # boxes, confident detections


@dataclass(frozen=True)
class Recipe:
    name: str
    applies_to: str = "any"
    activation_type: str | None = None
    weight_type: str | None = None
    per_channel: bool = True
    reason: str = ""
    tolerance: Tolerance = Tolerance(cosine_min=0.99)

    @property
    def needs_calibration(self) -> bool:
        return self.name in RECIPES_NEEDING_CALIBRATION

    @property
    def precision(self) -> str:
        return PRECISION_OF[self.name]

    @property
    def is_fp32(self) -> bool:
        """The fp32 model as it is ("none"): nothing to shrink."""
        return self.precision == "fp32"


@dataclass(frozen=True)
class ComputeUnit:
    name: str
    kind: str
    cores: int | None
    peak_gops: dict[str, float]
    active_w: float | None


@dataclass(frozen=True)
class Device:
    name: str
    units: tuple[ComputeUnit, ...]
    idle_w: float | None = None
    memory_bandwidth_gbps: float | None = None
    cache_bytes: float | None = None  # per-core cache a node's working set stays in (bytes)
    cache_bandwidth_gbps: float | None = None  # streaming rate while it does
    dispatch_overhead_us: float | None = None
    partition_switch_us: float | None = None
    battery_wh: float | None = None
    battery_v: float | None = None
    power_bank_wh: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    anchors: tuple[dict[str, Any], ...] = ()
    cost_model: dict[str, float] = field(default_factory=dict)  # measured cost-model parameters


@dataclass(frozen=True)
class TargetProfile:
    name: str
    family: str
    description: str
    engine: str
    execution_provider: str
    provider_options: dict[str, Any]
    op_table: str
    max_rank: int
    runtime_device: str | None
    arch: str
    abi: str | None
    cpu: str | None
    isa_features: tuple[str, ...]
    shape_policy: str
    default_batch: int
    recipes: tuple[Recipe, ...]
    format: str
    optimization_style: str
    optimization_level: str
    target_platform: str | None
    compress_to_fp16: bool
    minimal_build_level: str
    minimal_build_flags: tuple[str, ...]
    minimal_build_package: str | None
    stock_package: str | None
    stock_index: str | None  # where the stock runtime package is published ("pypi": bundles pin it in requirements.txt)
    stock_size: str  # "<published|measured>:<key>": where the stock runtime library's size comes from
    stock_size_note: str | None
    ci_runner: str | None  # the GitHub Actions runner that builds the minimal runtime
    device: Device
    source: str  # where it came from: "builtin:<name>" or the user's file name (never an absolute path)
    files: tuple[str, ...] = field(repr=False, compare=False, default=())  # the user's profile files read (resolved)
    estimate_session: dict[str, Any] = field(default_factory=dict)  # [estimate]: the session estimates model

    @property
    def is_accelerator(self) -> bool:
        return self.execution_provider in ACCELERATOR_EPS

    @property
    def requires_fixed_shapes(self) -> bool:
        return self.shape_policy == "fixed"


# ---------------------------------------------------------------------------------------------- loading


def builtin_dir() -> Path:
    """The folder of built-in profiles: inside the installed wheel, or ``targets/`` of a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "_targets"
    return packaged if packaged.is_dir() else here.parent / "targets"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or "\\" in ref


def _resolve_ref(ref: str, relative_to: Path | None) -> tuple[Path, str]:
    """Return (file, label) for a target name or a profile path."""
    if _looks_like_path(ref):
        path = Path(ref)
        if relative_to is not None and not path.is_absolute():
            path = relative_to / path
        if not path.is_file():
            msg = f"target profile file not found: {ref}"
            raise ProfileError(msg)
        return path, path.name
    names = builtin_names()
    if ref not in names:
        msg = f"unknown target '{ref}'{tc.did_you_mean(ref, names)}; choose one of: {', '.join(names)}, or give a .toml path"
        raise ProfileError(msg)
    return builtin_dir() / f"{ref}.toml", f"builtin:{ref}"


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        msg = f"{label}: not a UTF-8 text file"
        raise ProfileError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"{label}: invalid TOML: {exc}"
        raise ProfileError(msg) from exc
    except RecursionError as exc:
        msg = f"{label}: invalid TOML: nested too deeply"
        raise ProfileError(msg) from exc
    except OSError as exc:
        msg = f"{label}: cannot read: {exc.strerror}"
        raise ProfileError(msg) from exc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; arrays and scalars in ``over`` replace those of ``base``."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_raw(ref: str, relative_to: Path | None, chain: tuple[str, ...]) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    path, label = _resolve_ref(ref, relative_to)
    key = str(path.resolve())
    if key in chain:
        msg = f"{label}: 'extends' forms a cycle ({' -> '.join(Path(c).stem for c in (*chain, key))})"
        raise ProfileError(msg)
    data = _read_toml(path, label)
    profile_checks.check_raw(data, label)
    mine = () if label.startswith("builtin:") else (key,)
    base_ref = data.get("extends")
    if base_ref is None:
        return data, label, mine
    if not isinstance(base_ref, str):
        msg = f"{label}: 'extends' must be a string naming a target or a profile file"
        raise ProfileError(msg)
    # report problems in the user's own file before merging, so its keys are named in its own terms
    tc.check({k: v for k, v in data.items()}, _partial_schema(SCHEMA), label)
    profile_checks.check_chain(chain, label)
    try:
        base, _, files = _load_raw(base_ref, path.parent, (*chain, key))
    except ProfileError as exc:
        msg = f"{label}: 'extends = \"{base_ref}\"': {exc}"
        raise ProfileError(msg) from exc
    merged = _merge(base, data)
    merged.pop("extends", None)
    return merged, label, mine + files


def _partial_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema with nothing required (a child profile states only what differs)."""
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, Field):
            out[key] = Field(spec.type, False, spec.choices, spec.item_type, spec.minimum, spec.maximum)
        elif isinstance(spec, dict):
            out[key] = _partial_schema(spec)
        elif isinstance(spec, TableOf) and isinstance(spec.value, dict):
            out[key] = TableOf(_partial_schema(spec.value))
        else:  # arrays of tables replace the base's wholesale, so each item must be complete
            out[key] = spec
    return out


def load_target(ref: str | Path) -> TargetProfile:
    """Load a built-in target by name, or a user's profile from a path."""
    raw, label, files = _load_raw(str(ref), None, ())
    tc.check(raw, SCHEMA, label)
    _check_sources(raw, label)
    profile = _build(raw, label)
    from .target_rules import check_consistency

    profile_checks.check_profile(profile, label)
    check_consistency(profile, label)
    return replace(profile, files=files)


def load_targets(refs: list[str] | tuple[str, ...]) -> list[TargetProfile]:
    if not refs:
        return []
    if list(refs) == ["all"]:
        refs = builtin_names()
    profiles = [load_target(r) for r in refs]
    names = [p.name for p in profiles]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        msg = f"target '{dupes[0]}' given more than once"
        raise ProfileError(msg)
    return profiles


def _numeric_leaves(table: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in table.items():
        if key in ("sources", "anchors"):
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_numeric_leaves(value, dotted + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(dotted)
    return out


def _check_sources(raw: dict[str, Any], label: str) -> None:
    """Every hardware figure must name its public source in [device.sources]."""
    device = raw.get("device", {})
    sources = device.get("sources", {})
    leaves = _numeric_leaves(device)  # once: looked up per source below (it was recomputed per key: quadratic)
    for dotted in leaves:
        if not sources.get(dotted, "").strip():
            msg = f"{label}: 'device.{dotted}' has no source: add device.sources.\"{dotted}\" = \"<public source>\""
            raise ProfileError(msg)
    known = set(leaves)
    for key in sources:
        if key not in known:
            msg = f"{label}: 'device.sources.\"{key}\"' names no figure in [device]{tc.did_you_mean(key, leaves)}"
            raise ProfileError(msg)


def _build(raw: dict[str, Any], label: str) -> TargetProfile:
    rt, isa, conv, mb, dev = raw["runtime"], raw["isa"], raw["conversion"], raw["minimal_build"], raw["device"]
    recipes = tuple(
        Recipe(
            name=r["name"],
            applies_to=r.get("applies_to", "any"),
            activation_type=r.get("activation_type"),
            weight_type=r.get("weight_type"),
            per_channel=r.get("per_channel", True),
            reason=r.get("reason", ""),
            tolerance=Tolerance(**r["tolerance"]) if "tolerance" in r else Tolerance(cosine_min=0.99),
        )
        for r in raw.get("quantization", [{"name": "none"}])
    )
    units = tuple(
        ComputeUnit(
            name=name,
            kind=u["kind"],
            cores=u.get("cores"),
            peak_gops={k: float(v) for k, v in u.get("peak_gops", {}).items()},
            active_w=u.get("active_w"),
        )
        for name, u in dev.get("units", {}).items()
    )
    device = Device(
        name=dev["name"],
        units=units,
        idle_w=dev.get("idle_w"),
        memory_bandwidth_gbps=dev.get("memory_bandwidth_gbps"),
        cache_bytes=dev.get("cache_bytes"),
        cache_bandwidth_gbps=dev.get("cache_bandwidth_gbps"),
        dispatch_overhead_us=dev.get("dispatch_overhead_us"),
        partition_switch_us=dev.get("partition_switch_us"),
        battery_wh=dev.get("battery_wh"),
        battery_v=dev.get("battery_v"),
        power_bank_wh=dev.get("power_bank_wh"),
        sources=dict(dev.get("sources", {})),
        anchors=tuple(dev.get("anchors", [])),
        cost_model={k: float(v) for k, v in dev.get("cost_model", {}).items()},
    )
    return TargetProfile(
        name=raw["name"],
        family=raw["family"],
        description=raw.get("description", ""),
        engine=rt["engine"],
        execution_provider=rt["execution_provider"],
        provider_options=dict(rt.get("provider_options", {})),
        op_table=rt["op_table"],
        max_rank=rt.get("max_rank", 999),
        runtime_device=rt.get("device"),
        arch=isa["arch"],
        abi=isa.get("abi"),
        cpu=isa.get("cpu"),
        isa_features=tuple(isa.get("features", [])),
        shape_policy=raw["shapes"]["policy"],
        default_batch=raw["shapes"].get("default_batch", 1),
        recipes=recipes,
        format=conv["format"],
        optimization_style=conv.get("optimization_style", "fixed"),
        optimization_level=conv.get("optimization_level", "basic"),
        target_platform=conv.get("target_platform"),
        compress_to_fp16=conv.get("compress_to_fp16", False),
        minimal_build_level=mb["level"],
        minimal_build_flags=tuple(mb.get("flags", [])),
        minimal_build_package=mb.get("package"),
        stock_package=mb.get("stock_package"),
        stock_index=mb.get("stock_index"),
        stock_size=mb["stock_size"],
        stock_size_note=mb.get("stock_size_note"),
        ci_runner=mb.get("ci_runner"),
        device=device,
        source=label,
        estimate_session=dict(raw.get("estimate", {})),
    )
