"""Measure the stock runtime library sizes inside the wheels a registry ships; write targets/data/runtime_sizes.json.

Run from a checkout (needs network access to PyPI, once; the JSON is committed):

    python benchmarks/measure_runtime_sizes.py

It downloads, with pip and no dependencies, the aarch64 onnxruntime wheel of the installed
onnxruntime version (what a Raspberry Pi installs) and the openvino wheels (x86_64 for the Intel
target, aarch64 for reference) of the installed openvino version, and records for each wheel its
file name, sha256 and the uncompressed and in-wheel (deflate) sizes of every shared library in it.
edgepack.estimate.size reads this file; no runtime size is ever typed in by hand.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgepack.model import sha256_file  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "targets" / "data" / "runtime_sizes.json"
_SO = re.compile(r"\.so(\.\d+)*$|\.dylib$|\.dll$")


def _download(package: str, ver: str, arch: str, dest: Path) -> tuple[Path, str]:
    """pip download of the wheel for ``arch``; recent wheels are tagged manylinux_2_28, older ones manylinux2014, openvino newer tags."""
    plats = [f"manylinux2014_{arch}", *(f"manylinux_2_{v}_{arch}" for v in (28, 31, 34, 35))]
    args = ["download", "--no-deps", *[x for p in plats for x in ("--platform", p)], "--only-binary=:all:",
            "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}"]
    subprocess.run([sys.executable, "-m", "pip", *args, "-d", str(dest), f"{package}=={ver}"],
                   check=True, stdout=subprocess.DEVNULL)
    norm = package.replace("-", "_")
    wheels = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(norm) and arch in p.name)
    if not wheels:
        msg = f"pip download gave no {arch} wheel for {package}=={ver}"
        raise SystemExit(msg)
    return wheels[0], " ".join(["pip", *args, f"{package}=={ver}"])


def _libraries(wheel: Path) -> list[dict]:
    libs = []
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if _SO.search(info.filename):
                libs.append({"path": info.filename, "bytes": info.file_size, "bytes_deflated_in_wheel": info.compress_size})
    return sorted(libs, key=lambda x: x["path"])


def _entry(package: str, ver: str, arch: str, tmp: Path, runtime_filter: str) -> dict:
    wheel, cmd = _download(package, ver, arch, tmp)
    libs = _libraries(wheel)
    rx = re.compile(runtime_filter)
    runtime = [lib for lib in libs if rx.search(lib["path"])]
    return {
        "package": package,
        "version": ver,
        "arch": arch,
        "command": cmd,
        "wheel": wheel.name,
        "wheel_bytes": wheel.stat().st_size,
        "sha256": sha256_file(wheel),
        "runtime_filter": runtime_filter,
        "runtime_bytes": sum(lib["bytes"] for lib in runtime),
        "runtime_bytes_deflated": sum(lib["bytes_deflated_in_wheel"] for lib in runtime),
        "libraries": libs,
    }


# which libraries an app needs at run time: the C/C++ runtime, not the Python extension module
ENTRIES = {
    # onnxruntime wheels ship libonnxruntime.so* (C API, what a C/C++ app links) next to the pybind module
    "onnxruntime-aarch64": ("onnxruntime", "aarch64", r"capi/libonnxruntime\.so"),
    "onnxruntime-aarch64-python": ("onnxruntime", "aarch64", r"capi/onnxruntime_pybind11_state"),
    # openvino: the core runtime, the CPU plugin and the ONNX frontend (IR needs no frontend)
    # (IR needs the ir frontend; TBB is the threading library the core links)
    "openvino-x86_64": ("openvino", "x86_64",
                        r"libs/(libopenvino\.so|libopenvino_intel_cpu_plugin\.so|libopenvino_ir_frontend\.so|libtbb\.so)"),
    "openvino-aarch64": ("openvino", "aarch64",
                         r"libs/(libopenvino\.so|libopenvino_arm_cpu_plugin\.so|libopenvino_ir_frontend\.so|libtbb\.so)"),
    # onnxruntime-qnn (the QNN EP plugin + QNN libraries; Linux aarch64 builds stand in for the Android AARs, which
    # are not on PyPI): what an app loading a context binary needs for one HTP architecture - the plugin, libQnnHtp,
    # libQnnSystem and that architecture's stub (CPU side) and skeleton (runs on the Hexagon DSP). Not
    # libQnnHtpPrepare.so (90 MB): it compiles graphs on the device, which a context binary spares.
    **{f"onnxruntime-qnn-aarch64-v{arch}": (
        "onnxruntime-qnn", "aarch64",
        rf"onnxruntime_qnn/(libonnxruntime_providers_qnn\.so|libQnnHtp\.so|libQnnSystem\.so|libQnnHtpV{arch}(Stub|Skel)\.so)")
       for arch in (73, 75, 79)},
}


def main() -> int:
    vers = {"onnxruntime": version("onnxruntime"), "openvino": version("openvino"), "onnxruntime-qnn": version("onnxruntime-qnn")}
    out: dict = {
        "produced_by": "python benchmarks/measure_runtime_sizes.py",
        "note": "sizes of files inside wheels downloaded from PyPI with pip; 'runtime_bytes' sums the libraries "
                "matched by 'runtime_filter' (uncompressed, as installed)",
        "runtimes": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgepack-wheels-") as tmp:
        for key, (pkg, plat, rx) in ENTRIES.items():
            sub = Path(tmp) / key
            sub.mkdir()
            out["runtimes"][key] = _entry(pkg, vers[pkg], plat, sub, rx)
            print(key, out["runtimes"][key]["wheel"], out["runtimes"][key]["runtime_bytes"], file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
