"""The reference input/output pair every bundle ships, so its first run anywhere can be checked.

For each model: the first held-out verification input (a real calibration sample when the build
had ``--calibration``, else a generated one) and the fp32 original's outputs on it, as raw
little-endian C-order files under ``reference/`` (a phone app reads them with one buffer call; no
numpy format to parse), described in the manifest's ``models[].reference``. The check a runtime
makes on its own outputs is the recipe's tolerance: cosine similarity to the reference per output
at least ``cosine_min``, the same top-1 class for classifier-shaped outputs when the recipe asks
for top-1 agreement; outputs equal within 1e-5 of max(|reference|, 1) always pass (cosine is
unstable on near-constant outputs). :func:`check` is that rule; ``edgepack verify`` and the sample
apps (Python, Kotlin, Swift) implement the same one.

Same inputs give the same bytes: the pair comes from the build's deterministic samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics.vector import cosine

FOLDER = "reference"
EQUAL_WITHIN = 1e-5  # outputs within this of max(|reference|, 1) pass whatever their cosine
# dtypes a reference file may hold (numpy names, as the manifest writes them)
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "bool")


def _tensors(values: dict) -> dict[str, np.ndarray]:
    """The numeric tensors of a run, in order (sequences and maps - scikit-learn's ZipMap - are left out)."""
    out = {}
    for name, v in values.items():
        if isinstance(v, np.ndarray) and v.dtype.name in DTYPES:
            out[name] = v
    return out


def _file(model: str, kind: str, index: int) -> str:
    return f"{FOLDER}/{model}.{kind}{index}.bin"


def pair(m) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """(inputs, fp32 outputs) of a model state's first held-out sample, or None when it has none."""
    if not m.verify_inputs or not m.reference_outputs:
        return None
    return _tensors(m.verify_inputs[0]), _tensors(m.reference_outputs[0])


def _spec(name: str, arr: np.ndarray, path: str) -> dict[str, Any]:
    return {"name": name, "file": path, "dtype": arr.dtype.name, "shape": [int(d) for d in arr.shape]}


def entry(m) -> dict[str, Any] | None:
    """The manifest's ``models[].reference`` for a model state (None when there is no pair)."""
    got = pair(m)
    if got is None:
        return None
    inputs, outputs = got
    tolerance = m.recipe.tolerance if m.recipe is not None else None
    check: dict[str, Any] = {"equal_within": EQUAL_WITHIN}
    if tolerance is not None:
        check["cosine_min"] = tolerance.cosine_min
        if tolerance.top1_agreement_min is not None:
            check["same_top1"] = True
    source = "a held-out calibration sample" if m.real_samples else "a generated input"
    return {
        "inputs": [_spec(n, a, _file(m.name, "in", i)) for i, (n, a) in enumerate(inputs.items())],
        "outputs": [_spec(n, a, _file(m.name, "out", i)) for i, (n, a) in enumerate(outputs.items())],
        "byte_order": "little",
        "origin": f"{source}; outputs of the fp32 original (onnxruntime CPU on the build host)",
        "check": check,
    }


def write(ctx) -> dict[str, Path]:
    """Write every model's pair into the work folder; bundle-relative name -> file."""
    folder = ctx.work / "bundle-reference"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for m in ctx.models:
        got = pair(m)
        if got is None:
            continue
        for kind, tensors in (("in", got[0]), ("out", got[1])):
            for i, arr in enumerate(tensors.values()):
                rel = _file(m.name, kind, i)
                dst = folder / Path(rel).name
                dst.write_bytes(to_bytes(arr))
                files[rel] = dst
    return files


def to_bytes(arr: np.ndarray) -> bytes:
    """Raw little-endian, C order (bool as one byte each)."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return a.tobytes(order="C")


def from_bytes(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    """The array a reference file holds (ValueError when its size does not fit dtype and shape)."""
    dt = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(raw) != count * dt.itemsize:
        msg = f"{len(raw)} bytes, but {dtype} {list(shape)} needs {count * dt.itemsize}"
        raise ValueError(msg)
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(np.dtype(dtype))




def check(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], rule: dict) -> tuple[bool, str]:
    """(passed, why): ``got`` against the reference outputs under the manifest's ``check`` rule."""
    cosine_min = float(rule.get("cosine_min", 0.0))
    equal_within = float(rule.get("equal_within", EQUAL_WITHIN))
    worst = None
    for name, ref in expected.items():
        if name not in got:
            return False, f"no output '{name}'"
        out = np.asarray(got[name])
        if out.shape != ref.shape:
            return False, f"output '{name}' has shape {list(out.shape)}, the reference {list(ref.shape)}"
        r = ref.astype(np.float64).ravel()
        o = out.astype(np.float64).ravel()
        if not np.all(np.isfinite(o)):
            return False, f"output '{name}' holds NaN/Inf"
        scaled = float(np.max(np.abs(r - o))) / max(float(np.max(np.abs(r))) if r.size else 0.0, 1.0) if r.size else 0.0
        if scaled <= equal_within:
            continue
        cos = cosine(r, o)
        if cos < cosine_min:
            return False, f"output '{name}': cosine {cos:.6f} to the reference < {cosine_min} required"
        if rule.get("same_top1") and ref.ndim == 2 and ref.shape[-1] > 1:
            if not np.array_equal(np.argmax(ref, axis=-1), np.argmax(out, axis=-1)):
                return False, f"output '{name}': top-1 class differs from the reference"
        worst = cos if worst is None else min(worst, cos)
    detail = f"lowest cosine {worst:.6f}" if worst is not None else f"equal within {equal_within:g}"
    return True, f"{len(expected)} output(s) match the reference ({detail})"
