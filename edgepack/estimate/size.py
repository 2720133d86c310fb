"""Size: model artifact, download, runtime library (stock and minimal build), app-size delta, peak memory.

Stock runtime sizes come from files: ``targets/data/runtime_sizes.json`` written by
``benchmarks/measure_runtime_sizes.py`` from the wheels PyPI ships, or (Android/iOS, whose packages
are not on PyPI) from the published figures below, each with its source.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import onnx

from ..errors import ProfileError
from ..model import dtype_size, iter_graphs
from ..target import TargetProfile, builtin_dir
from .base import Estimate

MB = 1_000_000

# Published calibration points of the ONNX Runtime minimal-build size model (arm64).
PUBLISHED = {
    "minimal_no_ops": (1_305_000, "operator-free minimal arm64 build (MinSizeRel, --minimal_build --disable_ml_ops "
                       "--disable_exceptions) gated at 1,305,000 bytes in ORT CI: tools/ci_build/github/linux/ort_minimal/"
                       "build_minimal_ort_android_baseline_and_report_bin_size.sh"),
    "mobile_reduced": (3_200_000, "onnxruntime-mobile (reduced operators and types) 1.13.1 AAR, arm64: 3.2 MB "
                       "(ORT docs size table, removed in onnxruntime PR #21605)"),
    "android_full": (12_200_000, "onnxruntime-android 1.13.1 full AAR, arm64: 12.2 MB (ORT docs size table, removed "
                     "in onnxruntime PR #21605)"),
}
# the published points a profile's stock runtime can be (minimal_build.stock_size = "published:<key>")
PUBLISHED_LABELS = {"android_full": "full onnxruntime-android AAR, arm64"}
# Kernel counts behind those points: edgepack assumptions, not published figures.
MOBILE_PACKAGE_OPS = 85  # ops in ORT's mobile_package.required_operators.config (approximate count)
FULL_CPU_OPS = 200  # ai.onnx + ai.onnx.ml + com.microsoft CPU kernels of a full build (approximate)
REDUCED_TYPES_FACTOR = 1.0
_BASE = PUBLISHED["minimal_no_ops"][0]
PER_OP_BYTES = (PUBLISHED["mobile_reduced"][0] - _BASE) / MOBILE_PACKAGE_OPS
# calibrated on the full AAR: its bytes per op over the reduced-types bytes per op
ALL_TYPES_FACTOR = (PUBLISHED["android_full"][0] - _BASE) / (FULL_CPU_OPS * PER_OP_BYTES)
SIZE_BAND = (0.7, 1.3)
RUNTIME_HEAP_BYTES = (1 * MB, 2 * MB, 8 * MB)  # arena, session state, thread pool: low, value, high (assumption)


# ------------------------------------------------------------------------------ model artifact


def artifact_bytes(paths: list[Path]) -> int:
    return sum(Path(p).stat().st_size for p in paths)


_AHEAD: dict = {}  # (bytes, sha256) of a file's content -> the lane's future of its deflated size


def _deflated(chunks, level: int = 9) -> int:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate, as in a zip entry
    return sum(len(c.compress(block)) for block in chunks) + len(c.flush())


def _blocks(data: bytes, size: int = 1 << 20):
    return (data[i:i + size] for i in range(0, len(data), size))


def _content_key(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def deflate_ahead(path: Path) -> None:
    """Start deflating ``path``'s bytes on the background lane (zlib runs without the GIL) for a later
    :func:`compressed_bytes` of the same content: the build knows its artifact before it estimates."""
    from ..runtime.lane import LANE

    data = Path(path).read_bytes()
    key = _content_key(data)
    if key not in _AHEAD:
        _AHEAD[key] = LANE.submit(lambda: _deflated(_blocks(data)))


def compressed_bytes(paths: list[Path], level: int = 9) -> int:
    """Deflate (zlib level 9) each file, as an APK/IPA stores it; a computed, not a measured, figure."""
    total = 0
    for p in paths:
        size = Path(p).stat().st_size
        if level == 9 and any(n == size for n, _ in list(_AHEAD)):  # maybe deflated ahead: content decides
            data = Path(p).read_bytes()
            ahead = _AHEAD.pop(_content_key(data), None)
            if ahead is not None:
                from ..runtime.lane import LANE

                total += LANE.results([ahead])[0]
            else:
                total += _deflated(_blocks(data), level)
            continue
        with Path(p).open("rb") as f:
            total += _deflated(iter(lambda f=f: f.read(1 << 20), b""), level)
    return total


def model_size(paths: list[Path]) -> tuple[Estimate, Estimate]:
    """(artifact bytes, download bytes) of the shipped files."""
    raw = artifact_bytes(paths)
    z = compressed_bytes(paths)
    names = ", ".join(Path(p).name for p in paths)
    return (
        Estimate(raw, raw, raw, "bytes", f"file sizes of {names}", ["exact: the files as shipped"]),
        Estimate(z, z * 0.95, z * 1.05, "bytes", "computed: raw deflate level 9 of each file, as an APK/IPA compresses it",
                 ["app stores and zip tools use deflate; their level and framing differ by a few percent"]),
    )


# ------------------------------------------------------------------------------ runtime library


def runtime_sizes_file() -> Path:
    return builtin_dir() / "data" / "runtime_sizes.json"


def _runtime_data() -> dict:
    return json.loads(runtime_sizes_file().read_text(encoding="utf-8"))


def stock_runtime(profile: TargetProfile) -> Estimate:
    """The stock runtime libraries an app would ship for this target, from the profile's
    ``minimal_build.stock_size``: published figures (PUBLISHED) or measured wheels (runtime_sizes.json),
    one or several joined by '+' (an execution provider plugin beside the runtime) and summed."""
    parts = [_stock_part(profile, ref) for ref in profile.stock_size.split("+")]
    if len(parts) == 1:
        return parts[0]
    return Estimate(sum(e.value for e in parts), sum(e.low for e in parts), sum(e.high for e in parts), "bytes",
                    " + ".join(e.method for e in parts), [a for e in parts for a in e.assumptions])


def _stock_part(profile: TargetProfile, ref: str) -> Estimate:
    source, _, key = ref.partition(":")
    if source == "published":
        if key not in PUBLISHED or key not in PUBLISHED_LABELS:
            msg = (f"{profile.source}: 'minimal_build.stock_size' names no published runtime size '{key}'; "
                   f"choose one of: {', '.join('published:' + k for k in PUBLISHED_LABELS)}")
            raise ProfileError(msg)
        b, src = PUBLISHED[key]
        assumptions = [src] + ([profile.stock_size_note] if profile.stock_size_note else [])
        return Estimate(b, b * 0.9, b * 1.2, "bytes", f"published figure ({PUBLISHED_LABELS[key]})", assumptions)
    runtimes = _runtime_data()["runtimes"]
    if key not in runtimes:
        msg = (f"{profile.source}: 'minimal_build.stock_size' names no measured runtime '{key}' in "
               f"targets/data/runtime_sizes.json; choose one of: {', '.join('measured:' + k for k in runtimes)}")
        raise ProfileError(msg)
    entry = runtimes[key]
    b = entry["runtime_bytes"]
    libs = [lib["path"].rsplit("/", 1)[-1] for lib in entry["libraries"] if _matches(entry["runtime_filter"], lib["path"])]
    return Estimate(b, b, b, "bytes", f"measured: {', '.join(libs)} inside {entry['wheel']} (targets/data/runtime_sizes.json)",
                    [f"wheel sha256 {entry['sha256']}", f"produced by: {entry['command']}", "uncompressed, as installed"])


def _matches(rx: str, path: str) -> bool:
    import re

    return re.search(rx, path) is not None


def minimal_runtime_bytes(n_ops: int, *, reduced_types: bool = True) -> float:
    """Size model of a minimal ORT build: base + n_ops x per-kernel bytes x type factor."""
    factor = REDUCED_TYPES_FACTOR if reduced_types else ALL_TYPES_FACTOR
    return _BASE + n_ops * PER_OP_BYTES * factor


def calibration_points() -> list[dict]:
    """The published points the model is calibrated on, with the model's value for each."""
    pts = [("minimal_no_ops", 0, True), ("mobile_reduced", MOBILE_PACKAGE_OPS, True), ("android_full", FULL_CPU_OPS, False)]
    out = []
    for key, n, reduced in pts:
        published, src = PUBLISHED[key]
        model = minimal_runtime_bytes(n, reduced_types=reduced)
        out.append({"point": key, "ops": n, "reduced_types": reduced, "published_bytes": published,
                    "model_bytes": model, "low": model * SIZE_BAND[0], "high": model * SIZE_BAND[1], "source": src})
    return out


def count_config_ops(config: str | Path | None) -> tuple[int, bool]:
    """(operators, per-op type reduction?) of a required_operators_and_types.config (text or path)."""
    if config is None:
        return 0, False
    if isinstance(config, Path) or ("\n" not in config and Path(config).is_file()):
        text = Path(config).read_text(encoding="utf-8")
    else:
        text = config
    n, typed = 0, False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("!"):
            continue
        parts = line.split(";", 2)
        if len(parts) < 3:
            continue
        depth, ops = 0, []
        cur = ""
        for ch in parts[2]:  # split on commas outside {...}
            depth += ch == "{"
            depth -= ch == "}"
            if ch == "," and depth == 0:
                ops.append(cur)
                cur = ""
            else:
                cur += ch
        ops.append(cur)
        ops = [o for o in ops if o.strip()]
        n += len(ops)
        typed = typed or any("{" in o for o in ops)
    return n, typed


def model_ops(model: onnx.ModelProto) -> set[tuple[str, str]]:
    return {(n.domain or "ai.onnx", n.op_type) for g in iter_graphs(model.graph) for n in g.node}


def minimal_runtime(profile: TargetProfile, n_ops: int, reduced_types: bool, source: str) -> Estimate | None:
    """The minimal ONNX Runtime build's size; None for a target without one (minimal_build.level 'none')."""
    if profile.minimal_build_level == "none":
        return None
    v = minimal_runtime_bytes(n_ops, reduced_types=reduced_types)
    base, per_op = _BASE, PER_OP_BYTES
    assumptions = [
        f"base {base:,} bytes: {PUBLISHED['minimal_no_ops'][1]}",
        f"{per_op:,.0f} bytes per operator kernel with reduced types: ({PUBLISHED['mobile_reduced'][0]:,} - base) / "
        f"{MOBILE_PACKAGE_OPS} ops of the mobile package ({PUBLISHED['mobile_reduced'][1]}; op count an edgepack assumption)",
        f"x{ALL_TYPES_FACTOR:.2f} per kernel without type reduction (calibrated on the full AAR: {PUBLISHED['android_full'][1]})",
        f"{n_ops} operators from {source}" + ("" if reduced_types else ", all types"),
        "AAR figures are zip (compressed) sizes, the CI gate an uncompressed .so: the band covers the mix",
    ]
    if profile.is_accelerator:
        assumptions.append(f"the {profile.execution_provider} execution provider adds code the points above include only in the full AAR")
    return Estimate(v, v * SIZE_BAND[0], v * SIZE_BAND[1], "bytes",
                    "size model base + operators x bytes per kernel x type factor, calibrated on published ORT sizes", assumptions)


# ------------------------------------------------------------------------------ memory


def _tensor_bytes(vi_map: dict, name: str) -> float:
    vi = vi_map.get(name)
    if vi is None or not vi.type.HasField("tensor_type"):
        return 0.0
    tt = vi.type.tensor_type
    n = 1
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return 0.0
        n *= d.dim_value
    return n * dtype_size(tt.elem_type)


def weight_bytes(model: onnx.ModelProto) -> float:
    total = 0.0
    for g in iter_graphs(model.graph):
        for t in g.initializer:
            n = 1
            for d in t.dims:
                n *= d
            total += n * dtype_size(t.data_type)
    return total


def peak_activation_bytes(model: onnx.ModelProto) -> float:
    """Peak bytes of live activations over the main graph in its (topological) node order.

    A tensor is live from the node that makes it (graph inputs: from the start) until its last
    consumer has run; graph outputs stay live to the end. At each node its inputs and outputs are
    live together. Initializers are weights, counted separately. Unknown shapes count 0.
    """
    g = model.graph
    vi_map = {v.name: v for v in list(g.input) + list(g.value_info) + list(g.output)}
    inits = {t.name for t in g.initializer}
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.node):
        for name in n.input:
            if name and name not in inits:
                last_use[name] = i
    outputs = {o.name for o in g.output}
    live: dict[str, float] = {i.name: _tensor_bytes(vi_map, i.name) for i in g.input if i.name not in inits}
    peak = sum(live.values())
    for i, n in enumerate(g.node):
        for o in n.output:
            if o:
                live[o] = _tensor_bytes(vi_map, o)
        peak = max(peak, sum(live.values()))
        for name in list(live):
            if name not in outputs and last_use.get(name, -1) <= i:
                del live[name]
    return peak


def peak_memory(model: onnx.ModelProto, runtime_code_bytes: float) -> Estimate:
    w = weight_bytes(model)
    act = peak_activation_bytes(model)
    lo, mid, hi = RUNTIME_HEAP_BYTES
    v = w + act + runtime_code_bytes + mid
    return Estimate(v, w + act * 0.8 + runtime_code_bytes * 0.7 + lo, w * 1.1 + act * 1.5 + runtime_code_bytes + hi, "bytes",
                    "weights + peak live activations (liveness pass in topological order) + runtime code and heap",
                    [f"weights {w:,.0f} bytes (initializers as stored)",
                     f"peak live activations {act:,.0f} bytes; the runtime's arena may reuse or pad buffers (-20%/+50%)",
                     f"runtime code {runtime_code_bytes:,.0f} bytes mapped, heap {lo / MB:g}-{hi / MB:g} MB (assumption)"])


def app_size_delta(download: Estimate, runtime: Estimate, compress_ratio: float = 0.45) -> Estimate:
    """What the app grows by in the store: compressed model + compressed runtime library."""
    v = download.value + runtime.value * compress_ratio
    return Estimate(v, download.low + runtime.low * 0.35, download.high + runtime.high * 0.6, "bytes",
                    "compressed model + runtime library compressed at about 0.45x (deflate of native code)",
                    ["native libraries deflate to 35-60% of their size (third-party app: 11 MB .so -> 4.2 MB compressed)",
                     *runtime.assumptions[:1]])
