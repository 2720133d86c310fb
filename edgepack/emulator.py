"""Run models with a target's own onnxruntime build under user-mode CPU emulation (aarch64 on x86).

``setup("aarch64")`` prepares, once, an arm64 Debian root (``mmdebstrap --variant=extract``: packages are
unpacked, nothing runs inside, so neither binfmt_misc nor root privileges are needed) with python3 and the
aarch64 wheel of exactly the host's onnxruntime version (``pip download --platform manylinux_2_28_aarch64``).
Models run as ``qemu-aarch64-static -L ROOT -cpu MODEL ROOT/usr/bin/python3 _emulated_runner.py``: no
chroot, no root privileges; inputs and outputs go through plain-array ``.npz`` files in a temporary folder.

CPU detection: qemu 7.2 does not emulate ``/proc/cpuinfo`` for aarch64, so the guest would read the host's
x86 cpuinfo and ``/sys`` topology, on which onnxruntime's cpuinfo library segfaults. The root holds a
*directory* at ``proc/cpuinfo``, which qemu's ``-L`` lookup finds first: reading it fails, the cpuinfo
library gives up cleanly, and onnxruntime takes the CPU features from the HWCAP bits of the emulated CPU
model (``-cpu cortex-a72`` for a Pi 4: no dot product; ``cortex-a76`` for a Pi 5: dot product, fp16).

Wall times under emulation say nothing about the device's latency and are never reported as one.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .cleanup import tmp_prefix
from .errors import EdgepackError

ARCHES = {"aarch64": {"qemu": "qemu-aarch64", "debian": "arm64", "wheel_platform": "manylinux_2_28_aarch64"}}
SUITE = "bookworm"  # Debian 12: python 3.11, glibc 2.36 (>= the wheels' manylinux_2_28)
PACKAGES = ("python3", "libstdc++6")  # libstdc++6: onnxruntime is C++
STAMP, STAMP_FORMAT = "edgepack-emulator.json", 1
SITE, WHEELS = "opt/edgepack/site-packages", "opt/edgepack/wheels"
RUNNER = Path(__file__).with_name("_emulated_runner.py")
TIMING_NOTE = "wall-clock seconds under instruction emulation on the build host: not a latency of the device"
_NET = re.compile(r"\[Errno -?\d+\] [^'\")]+|Temporary failure [^'\")]+|Name or service not known|Network is unreachable|"
                  r"Connection refused|Could not resolve [^'\")]+|Failed to fetch \S+", re.I)


class EmulatorError(EdgepackError):
    """The emulated target environment is missing, out of date, or cannot be prepared on this host."""


class EmulatedRunError(EmulatorError):
    """A model could not be loaded or run by the emulated onnxruntime, or the run timed out."""


@dataclass(frozen=True)
class Environment:  # where an emulated check ran: what a manifest records next to its metrics
    arch: str
    cpu_model: str  # the qemu -cpu model
    onnxruntime: str
    numpy: str
    python: str
    qemu: str
    host_machine: str
    cpu_features: tuple[str, ...]  # AT_HWCAP/AT_HWCAP2 names the guest saw

    def where(self) -> str:
        return (f"{self.arch} onnxruntime {self.onnxruntime} under qemu-user {self.qemu} (cpu {self.cpu_model}: "
                f"{', '.join(self.cpu_features) or 'no features reported'}) on an {self.host_machine} host")

    def to_json(self) -> dict:
        return {"where": self.where(), **asdict(self), "cpu_features": list(self.cpu_features)}


@dataclass(frozen=True)
class EmulatedRun:
    outputs: list[dict[str, np.ndarray]]  # one {output name: array} per feed, like the host runner
    environment: Environment
    wall_s: float  # for a build record only, with TIMING_NOTE; never a latency, never in a bundle


def _arch(arch: str) -> dict:
    if arch not in ARCHES:
        msg = f"no emulator for arch '{arch}'; choose from: {', '.join(ARCHES)}"
        raise EmulatorError(msg)
    return ARCHES[arch]


def default_root(arch: str = "aarch64", root: str | Path | None = None) -> Path:
    """``root`` if given, else $EDGEPACK_EMULATOR_ROOT, else $XDG_CACHE_HOME (~/.cache)/edgepack/emulator/<arch>."""
    _arch(arch)
    if root or os.environ.get("EDGEPACK_EMULATOR_ROOT"):
        return Path(root or os.environ["EDGEPACK_EMULATOR_ROOT"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "edgepack/emulator" / arch


def host_onnxruntime() -> str:
    import onnxruntime

    return onnxruntime.__version__


def emulation_for(profile) -> dict | None:
    """``{arch, cpu}`` for :func:`run` where the profile's backend says its runtime build can be emulated, else None."""
    from .backends import backend_for

    return backend_for(profile).emulation(profile)


def qemu_binary(arch: str = "aarch64") -> str:
    name = _arch(arch)["qemu"]
    found = shutil.which(f"{name}-static") or shutil.which(name)
    if not found:
        msg = f"qemu-user-static is not installed (no {name}-static on PATH): apt-get install qemu-user-static"
        raise EmulatorError(msg)
    return found


@lru_cache(maxsize=8)
def _qemu_facts(binary: str) -> tuple[str, tuple[str, ...]]:
    try:  # (version, CPU models)
        ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        cpus = subprocess.run([binary, "-cpu", "help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        msg = f"{binary} does not run: {exc}"
        raise EmulatorError(msg) from None
    return next(iter(re.findall(r"version (\S+)", ver)), "unknown"), tuple(cpus.split()[2:])  # after "Available CPUs:"


def qemu_cpu(name: str | None, arch: str = "aarch64") -> str:
    """The qemu CPU model for a profile's CPU name ('Cortex-A76' -> 'cortex-a76'); None -> 'max'."""
    model = (name or "max").strip().lower().replace(" ", "-")
    models = _qemu_facts(qemu_binary(arch))[1]
    if models and model not in models:
        msg = f"qemu cannot emulate CPU '{name}'; it knows: {', '.join(models)}"
        raise EmulatorError(msg)
    return model


def read_stamp(root: Path) -> dict | None:
    try:
        stamp = json.loads((Path(root) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def plan(stamp: dict | None, host_ort: str, arch: str) -> str:
    """What setup must do: 'create' the root, re-install the 'wheels' only, or nothing ('ready')."""
    if not stamp or stamp.get("format") != STAMP_FORMAT or stamp.get("arch") != arch or stamp.get("suite") != SUITE:
        return "create"
    return "ready" if stamp.get("onnxruntime") == host_ort else "wheels"


def available(arch: str = "aarch64", root: str | Path | None = None) -> tuple[bool, str]:
    """(True, where) when models can run under emulation now, else (False, what is missing). Fast: no run."""
    try:
        qemu, root = qemu_binary(arch), default_root(arch, root)
    except EmulatorError as exc:
        return False, str(exc)
    stamp, host = read_stamp(root), host_onnxruntime()
    if plan(stamp, host, arch) == "create":
        return False, f"no {arch} emulator root at {root}: run `edgepack emulator setup {arch}`"
    if not (root / "usr/bin/python3").exists() or not (root / SITE / "onnxruntime").is_dir():
        return False, f"the emulator root at {root} is incomplete: remove it and run `edgepack emulator setup {arch}`"
    if stamp["onnxruntime"] != host:
        return False, (f"the emulated onnxruntime is {stamp['onnxruntime']} but the host has {host}: "
                       f"run `edgepack emulator setup {arch}` to re-install the wheel")
    return True, f"{arch} onnxruntime {host} under qemu-user {_qemu_facts(qemu)[0]} at {root}"


def _sh(cmd: list[str], what: str, timeout: float = 1800) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        msg = f"{what} did not finish within {timeout:g} s"
        raise EmulatorError(msg) from None
    if proc.returncode == 0:
        return proc.stdout
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "ERROR:", "error:"))] or lines or [f"exit code {proc.returncode}"]
    net = next((m.group(0).strip() for m in map(_NET.search, lines) if m), None)
    msg = f"{what}: no network ({net[:200]})" if net else f"{what} failed: {errors[-1][:300]}"
    raise EmulatorError(msg)


def _remove(path: Path) -> None:
    """Delete a folder setup made itself (a .partial or .new), never one with a mount point inside."""
    if not path.exists():
        return
    prefix = str(path.resolve())
    mounts = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines() if len(ln.split()) > 4]
    if any(m == prefix or m.startswith(prefix + "/") for m in mounts):
        msg = f"{path} has a mount point inside; unmount it before removing it"
        raise EmulatorError(msg)
    shutil.rmtree(path)


def _install_wheels(root: Path, arch: str, host_ort: str, python: str, log) -> dict:
    """pip download the arch's onnxruntime==host_ort + numpy wheels and unpack them into ROOT/SITE (download is
    not --quiet: pip would hide the connection warnings that tell 'no network' from 'no such wheel')."""
    import hashlib

    major_minor = ".".join(python.split(".")[:2])
    plat = ["--only-binary=:all:", "--platform", ARCHES[arch]["wheel_platform"], "--python-version", major_minor,
            "--implementation", "cp"]
    reqs, pip = [f"onnxruntime=={host_ort}", "numpy"], [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheels, site = root / (WHEELS + ".new"), root / (SITE + ".new")
    _remove(wheels)
    _remove(site)
    log(f"pip download {' '.join(reqs)} for {plat[2]}, CPython {major_minor}")
    try:
        _sh([*pip, "download", "-d", str(wheels), *plat, *reqs], "pip download from the package index")
    except EmulatorError as exc:
        if "No matching distribution found for onnxruntime" not in str(exc):
            raise
        msg = f"onnxruntime {host_ort} has no {plat[2]} wheel for CPython {major_minor} on the package index"
        raise EmulatorError(msg) from None
    _sh([*pip, "install", "--quiet", "--no-index", "--no-compile", "--find-links", str(wheels), "--target", str(site),
         *plat, *reqs], "pip install --target")
    for new, final in ((wheels, root / WHEELS), (site, root / SITE)):
        _remove(final)
        new.rename(final)
    whl = {w.name: w for w in (root / WHEELS).glob("*.whl")}
    found = {name.split("-")[0].lower(): name.split("-")[1] for name in whl}
    return {"onnxruntime": found.get("onnxruntime", "?"), "numpy": found.get("numpy", "?"),
            "wheels": {n: hashlib.sha256(whl[n].read_bytes()).hexdigest() for n in sorted(whl)}}


def _create(root: Path, arch: str, qemu: str, host_ort: str, log) -> dict:
    tool = shutil.which("mmdebstrap")
    if not tool:
        msg = "mmdebstrap is not installed (it unpacks the arm64 Debian root): apt-get install mmdebstrap"
        raise EmulatorError(msg)
    partial = root.with_name(f"{root.name}.partial")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove(partial)
    log(f"mmdebstrap {SUITE} arm64 ({', '.join(PACKAGES)}) into {partial}")
    try:
        _sh([tool, f"--arch={ARCHES[arch]['debian']}", "--variant=extract", f"--include={','.join(PACKAGES)}",
             "--skip=chroot/mount", SUITE, str(partial)], "mmdebstrap from the Debian mirror")
        (partial / "proc" / "cpuinfo").mkdir(parents=True, exist_ok=True)  # see the module docstring
        out = _sh([qemu, "-L", str(partial), str(partial / "usr/bin/python3"), "-I", "-S", "-c",
                   "import platform; print(platform.python_version())"], "the arm64 python3 under qemu", 300)
        stamp = {"format": STAMP_FORMAT, "arch": arch, "suite": SUITE, "packages": list(PACKAGES), "python": out.split()[-1]}
        stamp.update(_install_wheels(partial, arch, host_ort, stamp["python"], log))
        _write_stamp(partial, stamp)
        if root.exists():
            root.rmdir()  # only ever an empty folder here: setup refuses a non-empty one without a stamp
        partial.rename(root)
    except BaseException as exc:
        _remove(partial)
        if isinstance(exc, EmulatorError) and str(exc).startswith("mmdebstrap") and "network" not in str(exc) and os.geteuid():
            msg = f"{exc} (not root: mmdebstrap then needs fakechroot and fakeroot, or /etc/subuid ranges; or run as root)"
            raise EmulatorError(msg) from None
        raise
    return stamp


def _write_stamp(root: Path, stamp: dict) -> None:
    (root / f"{STAMP}.tmp").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / f"{STAMP}.tmp").replace(root / STAMP)


def setup(arch: str = "aarch64", root: str | Path | None = None, log=lambda msg: None) -> dict:
    """Prepare (or bring up to date) the emulator root; returns its stamp plus the 'action' taken. Idempotent."""
    root = default_root(arch, root)
    qemu, host_ort, stamp = qemu_binary(arch), host_onnxruntime(), read_stamp(root)
    if stamp is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        msg = f"{root} exists and is not an edgepack emulator root (no {STAMP}); remove it or choose another --root"
        raise EmulatorError(msg)
    action = plan(stamp, host_ort, arch)
    if action == "create" and stamp is not None:
        msg = f"{root} was made for another arch/suite/format ({STAMP}); remove it and run the setup again"
        raise EmulatorError(msg)
    try:
        if action == "create":
            stamp = _create(root, arch, qemu, host_ort, log)
        elif action == "wheels":
            log(f"re-installing the {arch} wheels only: onnxruntime {stamp.get('onnxruntime')} -> {host_ort}")
            stamp = {**stamp, **_install_wheels(root, arch, host_ort, stamp["python"], log)}
            _write_stamp(root, stamp)
    except OSError as exc:
        msg = f"cannot write {exc.filename or root}: {exc.strerror or exc}"
        raise EmulatorError(msg) from None
    return {**stamp, "action": action, "root": str(root)}


def _check_feeds(feeds) -> list[dict[str, np.ndarray]]:
    if not isinstance(feeds, (list, tuple)) or not feeds or not all(
            isinstance(f, dict) and all(isinstance(k, str) for k in f) for f in feeds):
        msg = "feeds must be a non-empty list of {input name: array} dicts"
        raise EmulatedRunError(msg)
    out = [{k: np.asarray(v) for k, v in feed.items()} for feed in feeds]
    for i, k, a in ((i, k, a) for i, f in enumerate(out) for k, a in f.items()):
        if a.dtype.kind not in "biuf" or a.dtype.fields is not None:
            msg = f"feed {i}: input '{k}' is not a plain numeric array (dtype {a.dtype})"
            raise EmulatedRunError(msg)
    return out


def _runner_failure(proc: subprocess.CompletedProcess, model: Path) -> str:
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    mine = [ln.split("error: ", 1)[1] for ln in lines if ln.startswith("edgepack-runner: error: ")]
    if mine:
        return mine[-1]
    if proc.returncode < 0:
        return f"the emulated onnxruntime crashed on {model.name} ({signal.Signals(-proc.returncode).name})"
    tail = next((ln for ln in reversed(lines) if "cpuinfo" not in ln), f"exit code {proc.returncode}")
    return f"the emulated runner failed on {model.name}: {tail[:300]}"


def run(model_path: str | Path, feeds: list[dict], *, arch: str = "aarch64", cpu: str | None = None, threads: int = 1,
        level: str | None = "disable", timeout_s: float = 1800.0, root: str | Path | None = None) -> EmulatedRun:
    """Run a .onnx or .ort (external data beside it) on the emulated onnxruntime, once per feed.

    ``cpu`` is the target's CPU (a profile's ``isa.cpu``, e.g. 'Cortex-A76'; None: qemu's 'max'); ``level``
    as for the host runner ('disable' runs a .ort exactly as stored; None keeps onnxruntime's default).
    """
    root = default_root(arch, root)
    ok, why = available(arch, root)
    if not ok:
        raise EmulatorError(why)
    model = Path(model_path).resolve()
    if model.suffix not in (".onnx", ".ort") or not model.is_file():
        msg = f"{model_path}: not an existing .onnx or .ort file"
        raise EmulatedRunError(msg)
    arrays = _check_feeds(feeds)  # threads and level are checked by the runner
    qemu, cpu_model = qemu_binary(arch), qemu_cpu(cpu, arch)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("emu")) as tmp:
        work = Path(tmp)
        for i, feed in enumerate(arrays):
            np.savez(work / f"in-{i:04d}.npz", **{f"a{j}": a for j, a in enumerate(feed.values())})
        request = {"version": 1, "model": str(model), "threads": threads, "level": level,
                   "input_names": [list(f) for f in arrays]}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        cmd = [qemu, "-L", str(root), "-cpu", cpu_model, str(root / "usr/bin/python3"), "-I", "-S", str(RUNNER),
               str(root / SITE), str(work)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": str(work)}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            msg = f"{model.name} did not finish within {timeout_s:g} s under emulation"
            raise EmulatedRunError(msg) from None
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise EmulatedRunError(_runner_failure(proc, model))
        info = json.loads((work / "response.json").read_text(encoding="utf-8"))
        outputs = []
        for i in range(len(arrays)):
            with np.load(work / f"out-{i:04d}.npz", allow_pickle=False) as npz:
                outputs.append({n: npz[f"a{j}"] for j, n in enumerate(info["output_names"])})
    where = Environment(arch, cpu_model, info["onnxruntime"], info["numpy"], info["python"], _qemu_facts(qemu)[0],
                        platform.machine(), tuple(info["cpu_features"]))
    return EmulatedRun(outputs, where, wall)


def run_models(model_path: str | Path, feeds: list[dict], **kwargs) -> list[dict[str, np.ndarray]]:
    """Outputs only, shaped like the host runner's: one {output name: array} per feed (see :func:`run`)."""
    return run(model_path, feeds, **kwargs).outputs


def probe(arch: str = "aarch64", root: str | Path | None = None, cpu: str | None = None) -> EmulatedRun:
    """Run a one-node model (y = x + 1) under emulation and check its answer."""
    import onnx
    from onnx import TensorProto, helper

    vi, f32 = helper.make_tensor_value_info, TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "probe", [vi("x", f32, [2])],
                              [vi("y", f32, [2])], [helper.make_tensor("one", f32, [1], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("emu-probe")) as tmp:
        onnx.save(model, str(Path(tmp) / "probe.onnx"))
        result = run(Path(tmp) / "probe.onnx", [{"x": np.array([1.5, -2.0], np.float32)}], arch=arch, cpu=cpu, root=root,
                     timeout_s=300)
    if not np.array_equal(result.outputs[0]["y"], np.array([2.5, -1.0], np.float32)):
        msg = f"the emulated onnxruntime computed {result.outputs[0]['y']} for [1.5, -2] + 1"
        raise EmulatedRunError(msg)
    return result


def status(arch: str = "aarch64", root: str | Path | None = None) -> dict:
    """What is there: root, stamp, host versions, qemu, and whether a probe run works."""
    root = default_root(arch, root)
    report = {"arch": arch, "root": str(root), "host_onnxruntime": host_onnxruntime(), "host_machine": platform.machine(),
              "stamp": read_stamp(root), "runs": False}
    try:
        report["qemu"] = _qemu_facts(qemu_binary(arch))[0]
    except EmulatorError as exc:
        report["qemu"] = f"missing: {exc}"
    ok, report["reason"] = available(arch, root)
    if ok:
        try:
            report["where"], report["runs"] = probe(arch, root).environment.where(), True
        except EmulatorError as exc:
            report["reason"] = str(exc)
    return report
