#!/usr/bin/env python3
"""Run an edgepack bundle on a Raspberry Pi / Linux host, exactly as its manifest.json says.

    python edgepack_run.py BUNDLE [INPUT] [--runs N] [--model NAME] [--size HxW] [--scale S]

INPUT is a ``.npy`` (one input), a ``.npz`` (arrays named after the inputs) or an image
(``.png``/``.jpg``/``.jpeg``/``.bmp``; needs Pillow) turned into a tensor with the preprocessing the
manifest records, or with --size/--scale when it records none. Without INPUT it runs the bundle's
reference input and checks the outputs against the reference outputs (exit 1 if they differ).

Needs only numpy and the runtime the bundle names (onnxruntime, or openvino for OpenVINO IR
bundles); it does not import edgepack. It reads only fields that schemas/manifest.schema.json
defines. Exit codes: 0 ran; 2 bad bundle or input (one line ``error: ...`` on stderr).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# manifest execution_provider -> onnxruntime provider name
ORT_PROVIDERS = {
    "CPU": "CPUExecutionProvider",
    "NNAPI": "NnapiExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "OpenVINO": "OpenVINOExecutionProvider",
}
OPENVINO_RUNTIME_CONFIG = "runtime_config.json"


class UsageError(Exception):
    """Bad bundle, bad input or bad flags: reported as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other bad input (argparse prints the usage too)
        raise UsageError(f"{message} (see --help)")


# ------------------------------------------------------------------------------------- manifest


def load_manifest(bundle: Path) -> dict:
    path = bundle / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{bundle} is not an edgepack bundle: no manifest.json in it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise UsageError(f"{path}: schema_version {found!r}; this app reads schema_version {SCHEMA_VERSION}")
    return manifest


def pick_model(manifest: dict, name: str | None) -> dict:
    models = manifest.get("models") or []
    names = [m.get("name") for m in models]
    if name is None:
        if len(models) != 1:
            raise UsageError(f"the bundle holds {len(models)} models; choose one with --model ({', '.join(map(str, names))})")
        return models[0]
    for m in models:
        if m.get("name") == name:
            return m
    raise UsageError(f"no model '{name}' in the bundle; models: {', '.join(map(str, names))}")


def input_specs(entry: dict) -> list[dict]:
    """[{name, dtype, shape}] of the shipped artifact: fixed shapes override the source model's."""
    declared = entry["source_model"]["inputs"]
    shipped = entry.get("shipped_inputs")
    if isinstance(shipped, dict):  # fixed shapes: {input name: [dims]}
        return [{"name": t["name"], "dtype": t["dtype"], "shape": shipped.get(t["name"], t["shape"])} for t in declared]
    return [{"name": t["name"], "dtype": t["dtype"], "shape": t["shape"]} for t in declared]


# ------------------------------------------------------------------------------------- inputs


def read_input(path: Path, specs: list[dict], entry: dict, args: argparse.Namespace) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if len(specs) != 1:
                names = ", ".join(s["name"] for s in specs)
                raise UsageError(f"the model has {len(specs)} inputs ({names}); give a .npz with one array per input name")
            return {specs[0]["name"]: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [s["name"] for s in specs if s["name"] not in data.files]
                if missing:
                    raise UsageError(f"{path.name} has no array for input(s) {', '.join(missing)}; it has {', '.join(data.files)}")
                return {s["name"]: data[s["name"]] for s in specs}
    except (ValueError, OSError) as exc:
        raise UsageError(f"cannot read {path.name}: {exc}") from exc
    if suffix in IMAGE_SUFFIXES:
        return read_image(path, specs, entry, args)
    raise UsageError(f"unsupported input {path.name}: give a .npy, .npz or an image ({', '.join(IMAGE_SUFFIXES)})")


def read_image(path: Path, specs: list[dict], entry: dict, args: argparse.Namespace) -> dict[str, np.ndarray]:
    try:
        from PIL import Image
    except ImportError as exc:
        raise UsageError("image inputs need Pillow: pip install pillow (or pass a .npy)") from exc
    pre = entry.get("preprocessing") or {}
    name = pre.get("input") or specs[0]["name"]
    spec = next((s for s in specs if s["name"] == name), None)
    if spec is None or len(specs) != 1:
        raise UsageError("an image can feed a model with exactly one input; give a .npz for this model")
    shape = spec["shape"] or []
    if len(shape) != 4:
        raise UsageError(f"input '{name}' has rank {len(shape)}; an image needs a rank-4 input (NCHW or NHWC)")
    layout = pre.get("layout") or ("NHWC" if shape[-1] in (1, 3) and shape[1] not in (1, 3) else "NCHW")
    channels = shape[1] if layout == "NCHW" else shape[3]
    color = pre.get("color") or ("GRAY" if channels == 1 else "RGB")
    size = pre.get("size") or args.size or [d for d in ((shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2]))]
    if not all(isinstance(d, int) for d in size):
        raise UsageError(f"input '{name}' has no fixed height/width; pass --size HxW")
    scale = pre.get("scale") if pre.get("scale") is not None else (args.scale if args.scale is not None else 1 / 255)
    try:
        img = Image.open(path)
        img = img.convert("L" if color == "GRAY" else "RGB").resize((size[1], size[0]), Image.BILINEAR)
    except OSError as exc:
        raise UsageError(f"cannot read image {path.name}: {exc}") from exc
    x = np.asarray(img, dtype=np.float32)
    x = x[..., None] if x.ndim == 2 else x
    if color == "BGR":
        x = x[..., ::-1]
    x = x * np.float32(scale)
    x = (x - np.asarray(pre.get("mean") or [0.0], np.float32)) / np.asarray(pre.get("std") or [1.0], np.float32)
    x = x[None] if layout == "NHWC" else x.transpose(2, 0, 1)[None]
    source = "the manifest's preprocessing" if pre else f"--size {size[0]}x{size[1]}, scale {scale:g}"
    print(f"image {path.name} -> {name} {list(x.shape)} ({color}, {layout}, {source})")
    return {name: x.astype(spec["dtype"])}


def check_inputs(feed: dict[str, np.ndarray], specs: list[dict]) -> dict[str, np.ndarray]:
    """Shape and dtype against the manifest; one missing leading batch axis of 1 is added."""
    out = {}
    for spec in specs:
        name, dtype, want = spec["name"], spec["dtype"], spec["shape"]
        x = feed[name]
        if x.dtype != np.dtype(dtype):
            raise UsageError(f"input '{name}' is {x.dtype} but the bundle expects {dtype}")
        if want is not None:
            if x.ndim == len(want) - 1 and (want[0] == 1 or not isinstance(want[0], int)):
                x = x[None]  # one sample without its batch axis
            fits = x.ndim == len(want) and all(not isinstance(w, int) or w == d for w, d in zip(want, x.shape))
            if not fits:
                dims = "[" + ", ".join("?" if w is None else str(w) for w in want) + "]"
                kind = "fixed shape" if all(isinstance(w, int) for w in want) else "named dimensions take any size"
                raise UsageError(f"input '{name}' has shape {list(x.shape)} but the bundle expects {dims} ({kind})")
        out[name] = x
    return out


# ------------------------------------------------------------------------------------- sessions


def _option_value(v) -> str:
    return ("1" if v else "0") if isinstance(v, bool) else str(v)


def ort_session(bundle: Path, manifest: dict, artifact: Path):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UsageError("this bundle needs onnxruntime: pip install -r requirements.txt") from exc
    runtime = manifest["runtime"]
    wrote = manifest.get("toolchain", {}).get("onnxruntime")
    if wrote and wrote != ort.__version__:
        print(f"note: the bundle was written by onnxruntime {wrote}; this is {ort.__version__} (pin {wrote} on the device)")
    so = ort.SessionOptions()
    for key, value in sorted((runtime.get("session_config") or {}).items()):
        so.add_session_config_entry(key, str(value))
    ep = runtime["execution_provider"]
    wanted = ORT_PROVIDERS.get(ep)
    if wanted is None:
        raise UsageError(f"unknown execution_provider {ep!r} in the manifest; known: {', '.join(ORT_PROVIDERS)}")
    providers: list = ["CPUExecutionProvider"]
    if wanted != "CPUExecutionProvider":
        if wanted in ort.get_available_providers():
            options = {k: _option_value(v) for k, v in (runtime.get("provider_options") or {}).items()}
            providers = [(wanted, options), "CPUExecutionProvider"]
        else:
            print(f"note: the bundle targets {wanted}, which this onnxruntime does not have "
                  f"(available: {', '.join(ort.get_available_providers())}); running on CPUExecutionProvider")
    try:
        session = ort.InferenceSession(str(artifact), so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UsageError(f"onnxruntime cannot load {artifact.name}: {str(exc).splitlines()[0]}") from exc
    label = ", ".join(session.get_providers())
    return (lambda feed: dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))), f"onnxruntime {ort.__version__} [{label}]"


def openvino_session(bundle: Path, manifest: dict, artifact: Path):
    try:
        import openvino as ov
    except ImportError as exc:
        raise UsageError("this bundle needs OpenVINO: pip install -r requirements.txt") from exc
    runtime = manifest["runtime"]
    device, config = runtime.get("device"), {}
    cfg_path = bundle / (runtime.get("config_file") or OPENVINO_RUNTIME_CONFIG)
    if cfg_path.is_file():
        try:
            rc = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{cfg_path.name} is not valid JSON: {exc}") from exc
        device = rc.get("device") or device
        config = dict(rc.get("properties") or {})
    else:
        print(f"note: no {cfg_path.name} in the bundle; compiling with OpenVINO's defaults")
    device = device or "CPU"
    wrote = manifest.get("toolchain", {}).get("openvino")
    if wrote and wrote.split("-")[0] != ov.__version__.split("-")[0]:
        print(f"note: the bundle was written by openvino {wrote}; this is {ov.__version__}")
    try:
        compiled = ov.Core().compile_model(str(artifact), device, {k: _option_value(v) for k, v in config.items()})
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long texts
        raise UsageError(f"OpenVINO cannot compile {artifact.name} for {device}: {str(exc).splitlines()[0]}") from exc
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feed):
        result = compiled(feed)
        return {n: np.asarray(result[o]) for n, o in zip(names, compiled.outputs)}

    settings = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
    return run, f"openvino {ov.__version__} [{device}{': ' + settings if settings else ''}]"


# ------------------------------------------------------------------------------------- the reference pair

REFERENCE_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                    "uint64", "bool")


def read_reference(bundle: Path, tensors: list) -> dict[str, np.ndarray]:
    """The raw little-endian files of the manifest's ``reference`` (inputs or outputs), as arrays."""
    out = {}
    for t in tensors:
        rel, dtype, shape = t.get("file"), t.get("dtype"), t.get("shape")
        if not isinstance(rel, str) or ".." in rel.split("/") or rel.startswith("/") or dtype not in REFERENCE_DTYPES:
            raise UsageError(f"the manifest's reference entry {t.get('name')!r} is malformed")
        raw = (bundle / rel).read_bytes()
        dt = np.dtype(dtype).newbyteorder("<")
        if len(raw) != int(np.prod(shape)) * dt.itemsize:
            raise UsageError(f"reference file {rel} does not hold {dtype} {shape}")
        out[t["name"]] = np.frombuffer(raw, dtype=dt).reshape(shape).astype(dtype)
    return out


def check_reference(expected: dict, got: dict, rule: dict) -> tuple[bool, str]:
    """The bundle's check (edgepack/reference.py): per output, equal within ``equal_within`` of
    max(|reference|, 1), or cosine >= ``cosine_min`` and, with ``same_top1``, the same top-1 class."""
    lowest = None
    for name, ref in expected.items():
        if name not in got:
            return False, f"no output '{name}'"
        r = ref.astype(np.float64).ravel()
        o = np.asarray(got[name]).astype(np.float64).ravel()
        if r.shape != o.shape:
            return False, f"output '{name}' has {o.size} values, the reference {r.size}"
        if not np.all(np.isfinite(o)):
            return False, f"output '{name}' holds NaN/Inf"
        if r.size and np.max(np.abs(r - o)) / max(float(np.max(np.abs(r))), 1.0) <= rule.get("equal_within", 1e-5):
            continue
        na, nb = np.linalg.norm(r), np.linalg.norm(o)
        cos = 1.0 if na == nb == 0 else (0.0 if na == 0 or nb == 0 else float(np.dot(r, o) / (na * nb)))
        if cos < rule.get("cosine_min", 0.0):
            return False, f"output '{name}': cosine {cos:.6f} < {rule['cosine_min']}"
        if rule.get("same_top1") and ref.ndim == 2 and ref.shape[-1] > 1:
            if not np.array_equal(ref.argmax(-1), np.asarray(got[name]).argmax(-1)):
                return False, f"output '{name}': top-1 class differs from the reference"
        lowest = cos if lowest is None else min(lowest, cos)
    detail = f"lowest cosine {lowest:.6f}" if lowest is not None else "equal"
    return True, f"{len(expected)} output(s) match the reference ({detail})"


# ------------------------------------------------------------------------------------- output


def describe(outputs: dict[str, np.ndarray], entry: dict | None = None) -> list[str]:
    meaning = {o.get("name"): o.get("meaning") for o in (entry or {}).get("outputs") or [] if isinstance(o, dict)}
    lines = []
    for name, y in outputs.items():
        y = np.asarray(y)
        lines.append(f"output '{name}': {y.dtype} {list(y.shape)}" + (f" - {meaning[name]}" if meaning.get(name) else ""))
        if y.ndim in (1, 2) and np.issubdtype(y.dtype, np.floating) and 2 <= y.shape[-1] <= 100_000:
            rows = y.reshape(-1, y.shape[-1]).astype(np.float64)  # classifier-like: [classes] or [batch, classes]
            preds = rows.argmax(axis=1)
            lines.append(f"  predicted class: {', '.join(str(int(p)) for p in preds[:16])}{' ...' if len(preds) > 16 else ''}")
            probs = np.exp(rows[0] - rows[0].max())
            probs /= probs.sum()
            top = np.argsort(-rows[0])[:5]
            lines.append(("  top-5 (softmax): " if len(rows) == 1 else "  top-5 of sample 0 (softmax): ")
                         + ", ".join(f"{int(i)} ({probs[i]:.3f})" for i in top))
        else:
            lines.append(f"  first values: {np.array2string(y.reshape(-1)[:8], precision=4, separator=', ')}")
    return lines


def run(argv: list[str] | None = None) -> int:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (holds manifest.json)")
    parser.add_argument("input", type=Path, nargs="?",
                        help=".npy, .npz or image file (default: the bundle's reference input, checked)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs; the median is printed (default 20)")
    parser.add_argument("--model", help="model name, for bundles with several models")
    parser.add_argument("--size", help="image height x width, e.g. 224x224 (when the manifest records no preprocessing)")
    parser.add_argument("--scale", type=float, help="image pixel scale (default 1/255) when the manifest records none")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise UsageError("--runs must be at least 1")
    if args.size is not None:
        try:
            size = [int(v) for v in args.size.lower().split("x")]
            if len(size) != 2 or min(size) < 1:
                raise ValueError
        except ValueError:
            raise UsageError(f"--size must look like 224x224, got {args.size!r}") from None
        args.size = size

    manifest = load_manifest(args.bundle)
    entry = pick_model(manifest, args.model)
    artifact = args.bundle / str(entry.get("artifact") or "")
    if not entry.get("artifact") or not artifact.is_file():
        raise UsageError(f"the bundle's model file {entry.get('artifact')!r} is missing")
    specs = input_specs(entry)
    reference = entry.get("reference") if args.input is None else None
    if args.input is None:
        if not isinstance(reference, dict):
            raise UsageError("the bundle has no reference pair (built by an older edgepack): give an INPUT file")
        feed = check_inputs(read_reference(args.bundle, reference["inputs"]), specs)
    else:
        feed = check_inputs(read_input(args.input, specs, entry, args), specs)

    engine = manifest["target"]["engine"]
    make = openvino_session if engine == "openvino" else ort_session
    infer, label = make(args.bundle, manifest, artifact)
    print(f"bundle {manifest['target']['name']}: {entry['name']} ({artifact.name}, "
          f"{entry['quantization']['recipe']}) on {label}")

    outputs = infer(feed)  # warm-up: first run allocates and, on accelerators, compiles
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        infer(feed)
        times.append((time.perf_counter() - t0) * 1000)
    print("\n".join(describe(outputs, entry)))
    print(f"latency: median {statistics.median(times):.3f} ms over {args.runs} run(s) "
          f"(min {min(times):.3f}, max {max(times):.3f})")
    if reference is not None:
        ok, why = check_reference(read_reference(args.bundle, reference["outputs"]), outputs, reference.get("check") or {})
        print(f"reference check: {'passed' if ok else 'FAILED'}: {why}")
        return 0 if ok else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
