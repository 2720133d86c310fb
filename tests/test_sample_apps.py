"""sample_apps/: the Python app runs every host-runnable bundle; every app reads only schema-defined fields."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest

from test_schemas import _validator, build_bundles

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "sample_apps"
RUNNER = APPS / "python" / "edgepack_run.py"
SAMPLE = APPS / "model"
SCHEMA = json.loads((REPO / "schemas" / "manifest.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return build_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def one_sample(tmp_path_factory) -> tuple[Path, int]:
    """One calibration sample as .npy, and the class the fp32 original predicts for it."""
    x = np.load(SAMPLE / "calibration" / "input.npy")[:1]
    path = tmp_path_factory.mktemp("inputs") / "one.npy"
    np.save(path, x)
    logits = ort.InferenceSession(str(SAMPLE / "digits_cnn.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return path, int(logits.argmax())


def run_app(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------- the Python app


def test_runs_every_host_runnable_bundle(bundles, one_sample):
    path, expected = one_sample
    assert {"android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"} <= set(bundles)
    if __import__("importlib.util").util.find_spec("openvino") is not None:
        assert "intel-openvino" in bundles  # a real OpenVINO IR bundle from `edgepack build`
    for name, bundle in bundles.items():
        proc = run_app(bundle, path, "--runs", 3)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert f"predicted class: {expected}" in proc.stdout, f"{name}: {proc.stdout}"
        assert re.search(r"latency: median [0-9.]+ ms over 3 run", proc.stdout), proc.stdout
        assert "output 'logits': float32 [1, 10]" in proc.stdout


def test_accelerator_bundle_falls_back_to_cpu_and_says_so(bundles, one_sample):
    proc = run_app(bundles["android-nnapi"], one_sample[0], "--runs", 1)
    assert proc.returncode == 0, proc.stderr
    assert "NnapiExecutionProvider" in proc.stdout and "running on CPUExecutionProvider" in proc.stdout


def test_sample_without_batch_axis_gets_one(bundles, tmp_path, one_sample):
    path, expected = one_sample
    np.save(tmp_path / "x.npy", np.load(path)[0])
    proc = run_app(bundles["rpi4-cpu"], tmp_path / "x.npy", "--runs", 1)
    assert proc.returncode == 0, proc.stderr
    assert f"predicted class: {expected}" in proc.stdout


def test_image_input_with_size_flag(bundles, tmp_path, one_sample):
    pil = pytest.importorskip("PIL.Image")
    x = np.load(one_sample[0])[0, 0]
    pil.fromarray(np.round(x * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    proc = run_app(bundles["rpi5-cpu"], tmp_path / "digit.png", "--size", "8x8", "--runs", 1)
    assert proc.returncode == 0, proc.stderr
    assert f"predicted class: {one_sample[1]}" in proc.stdout
    assert "GRAY, NCHW" in proc.stdout


@pytest.mark.parametrize(
    ("bundle", "make", "message"),
    [
        ("rpi4-cpu", lambda x: x[:, :, :4], "error: input 'input' has shape [1, 1, 4, 8] but the bundle expects [batch, 1, 8, 8]"),
        ("android-nnapi", lambda x: np.concatenate([x, x]), "error: input 'input' has shape [2, 1, 8, 8] but the bundle expects [1, 1, 8, 8] (fixed shape)"),
        ("ios-coreml", lambda x: x.astype(np.float64), "error: input 'input' is float64 but the bundle expects float32"),
        ("rpi5-cpu", lambda x: x[0, 0, 0], "error: input 'input' has shape [8] but the bundle expects"),
    ],
    ids=["wrong-hw", "batch-on-fixed", "wrong-dtype", "wrong-rank"],
)
def test_bad_input_exits_2_with_one_line(bundles, tmp_path, one_sample, bundle, make, message):
    np.save(tmp_path / "bad.npy", make(np.load(one_sample[0])))
    proc = run_app(bundles[bundle], tmp_path / "bad.npy")
    assert proc.returncode == 2
    assert proc.stderr.startswith(message), proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{tmp}", "{npy}"), "is not an edgepack bundle: no manifest.json"),
        (("{bundle}", "{tmp}/missing.npy"), "input file not found"),
        (("{bundle}", "{tmp}/x.txt"), "unsupported input x.txt"),
        (("{bundle}", "{npy}", "--model", "other"), "no model 'other' in the bundle; models: model"),
        (("{bundle}", "{npy}", "--runs", "0"), "--runs must be at least 1"),
        ((), "the following arguments are required: bundle"),
    ],
    ids=["not-a-bundle", "missing-input", "unsupported-input", "unknown-model", "zero-runs", "usage"],
)
def test_bad_usage_exits_2(bundles, tmp_path, one_sample, args, message):
    (tmp_path / "x.txt").write_text("1 2 3")
    fill = {"tmp": tmp_path, "npy": one_sample[0], "bundle": bundles["rpi4-cpu"]}
    proc = run_app(*(a.format(**fill) for a in args))
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_bad_manifest_exits_2(bundles, tmp_path, one_sample):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["rpi4-cpu"], bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**doc, "schema_version": 2}))
    proc = run_app(bundle, one_sample[0])
    assert proc.returncode == 2 and "this app reads schema_version 1" in proc.stderr


def test_openvino_bundle(bundles, tmp_path, one_sample):
    """OpenVINO IR bundle as the schema describes it (until `edgepack build` writes real ones)."""
    ov = pytest.importorskip("openvino")
    bundle = tmp_path / "intel-openvino"
    bundle.mkdir()
    ov.save_model(ov.convert_model(str(SAMPLE / "digits_cnn.onnx")), str(bundle / "model.xml"), compress_to_fp16=True)
    doc = json.loads((bundles["rpi4-cpu"] / "manifest.json").read_text())
    doc["target"].update(name="intel-openvino", engine="openvino", execution_provider="OpenVINO", family="intel")
    doc["models"][0]["artifact"] = "model.xml"
    doc["runtime"] = {"execution_provider": "OpenVINO", "config_file": "runtime_config.json"}
    doc["toolchain"]["openvino"] = ov.__version__
    (bundle / "manifest.json").write_text(json.dumps(doc))
    (bundle / "runtime_config.json").write_text(json.dumps(
        {"runtime": "openvino", "device": "CPU", "properties": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1}}))
    rc_schema = {**SCHEMA["$defs"]["openvino_runtime_config"], "$defs": SCHEMA["$defs"]}
    jsonschema.validate(json.loads((bundle / "runtime_config.json").read_text()), rc_schema)
    proc = run_app(bundle, one_sample[0], "--runs", 2)
    assert proc.returncode == 0, proc.stderr
    assert f"predicted class: {one_sample[1]}" in proc.stdout
    assert "[CPU: INFERENCE_NUM_THREADS=1, PERFORMANCE_HINT=LATENCY]" in proc.stdout


def test_python_app_does_not_import_edgepack():
    tree = ast.parse(RUNNER.read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "edgepack" not in imported
    assert imported <= {"__future__", "argparse", "json", "statistics", "sys", "time", "pathlib", "numpy",
                        "onnxruntime", "openvino", "PIL"}, imported


# ------------------------------------------------------------------------------------- field names vs the schema


def schema_fields(node=SCHEMA) -> set[str]:
    """Every property name the manifest schema defines, at any depth."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                found |= set(value)
            found |= schema_fields(value)
    elif isinstance(node, list):
        for item in node:
            found |= schema_fields(item)
    return found


_SUBSCRIPT = re.compile(r"""(?<=[\w\])])\[\s*["']([A-Za-z_][\w.]*)["']\s*\]""")
_PY_GET = re.compile(r"""\.get\(\s*["']([A-Za-z_][\w.]*)["']""")
_KOTLIN_JSON = re.compile(r"""\.(?:get|opt|has)(?:JSONObject|JSONArray|String|Int|Long|Double|Boolean)?\(\s*"([^"]+)"\s*[,)]""")
_SWIFT_KEY = re.compile(r"""^\s*case\s+\w+\s*=\s*"([^"]+)"\s*$""", re.M)


def fields_read(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return set(_SUBSCRIPT.findall(text)) | set(_PY_GET.findall(text))
    if path.suffix == ".kt":
        return set(_KOTLIN_JSON.findall(text))
    if path.name.endswith(".gradle.kts"):
        return set(_SUBSCRIPT.findall(text))
    if path.suffix == ".swift":
        return set(_SWIFT_KEY.findall(text)) | set(_SUBSCRIPT.findall(text))
    raise AssertionError(path)


READERS = {
    "python": [RUNNER],
    "android": [APPS / "android/app/src/main/java/dev/edgepack/sample/ManifestReader.kt", APPS / "android/app/build.gradle.kts"],
    "ios": [APPS / "ios/Sources/EdgepackSample/ManifestReader.swift"],
}
MUST_READ = {"schema_version", "execution_provider", "provider_options", "session_config", "artifact", "toolchain",
             "outputs", "meaning", "preprocessing", "reference", "file", "check", "equal_within", "cosine_min",
             "same_top1"}


@pytest.mark.parametrize("app", sorted(READERS))
def test_apps_read_only_schema_fields(app):
    defined = schema_fields()
    read = set().union(*(fields_read(p) for p in READERS[app]))
    undefined = sorted(read - defined)
    assert not undefined, f"{app} reads fields that schemas/manifest.schema.json does not define: {undefined}"


def test_scan_sees_the_fields_each_app_needs():
    """Guard against a scan that silently finds nothing."""
    for app, paths in READERS.items():
        read = set().union(*(fields_read(p) for p in paths))
        expected = MUST_READ if app != "ios" else MUST_READ | {"source_model", "shipped_inputs", "byte_order", "pad_value"}
        assert expected <= read, f"{app}: {sorted(expected - read)} not found by the scan"


def test_swift_coding_keys_all_have_json_names():
    """A CodingKeys case without a raw value would decode a camelCase key the scan cannot see."""
    text = READERS["ios"][0].read_text(encoding="utf-8")
    for block in re.findall(r"enum CodingKeys[^{]*\{(.*?)\}", text, re.S):
        for line in block.strip().splitlines():
            assert re.match(r'^\s*case\s+\w+\s*=\s*"[^"]+"\s*$', line), line


def test_a_field_missing_from_the_schema_is_caught(tmp_path):
    app = tmp_path / "app.py"
    app.write_text('x = manifest["runtime"].get("execution_provider")\ny = manifest["warp_speed"]\n')
    assert sorted(fields_read(app) - schema_fields()) == ["warp_speed"]
    kt = tmp_path / "App.kt"
    kt.write_text('val a = o.optString("warp_drive", "x")\nval b = o.getInt("schema_version")\n')
    assert sorted(fields_read(kt) - schema_fields()) == ["warp_drive"]  # reads with a default are seen too


# ------------------------------------------------------------------------------------- the reference pair


def test_python_app_runs_and_checks_the_reference_input(bundles):
    for name, bundle in bundles.items():
        proc = run_app(bundle, "--runs", 2)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert re.search(r"reference check: passed: 1 output\(s\) match the reference", proc.stdout), proc.stdout
        assert "output 'logits': float32 [1, 10] - looks like class scores (logits)" in proc.stdout


def test_python_app_fails_when_the_outputs_differ_from_the_reference(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["rpi4-cpu"], bundle)
    ref = bundle / "reference" / "model.out0.bin"
    ref.write_bytes((-np.frombuffer(ref.read_bytes(), "<f4")).astype("<f4").tobytes())
    proc = run_app(bundle, "--runs", 1)
    assert proc.returncode == 1 and "reference check: FAILED: output 'logits': cosine -0.99" in proc.stdout


# ------------------------------------------------------------------------------------- the mobile samples' code

KOTLIN = APPS / "android/app/src/main/java/dev/edgepack/sample"
SWIFT = APPS / "ios/Sources/EdgepackSample"


def _code(path: Path) -> str:
    """Source without comments (so a requirement is met by code, not by a remark about it)."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in text.splitlines())


def test_android_sample_loads_by_path_reuses_the_session_and_falls_back():
    runner = _code(KOTLIN / "BundleRunner.kt")
    assert "env.createSession(model.path," in runner and "readBytes()" not in runner.split("private fun bytes")[0]
    assert "@Volatile private var shared" in runner and "fun shared(" in runner  # one session per process
    assert "setIntraOpNumThreads(" in runner
    assert re.search(r"catch \(e: OrtException\) \{.*?options\(accelerator = false\)", runner, re.S)  # CPU fallback
    assert "checkReference(" in runner and "referenceInputs()" in runner
    main = _code(KOTLIN / "MainActivity.kt")
    assert "catch (e: UnsatisfiedLinkError)" in main and "BundleRunner.shared(this)" in main
    assert "FloatArray(shape.fold" not in main  # no more zeros as input
    gradle = (APPS / "android/app/build.gradle.kts").read_text()
    assert 'file("src/main/assets/bundle/manifest.json")' in gradle and 'libs/onnxruntime-release.aar' in gradle


def test_ios_sample_fixes():
    runner = _code(SWIFT / "BundleRunner.swift")
    assert 'coreml["ModelCacheDirectory"]' in runner and "setIntraOpNumThreads(" in runner
    assert "public static func shared(directory:" in runner
    assert re.search(r"catch where provider != \"CPU\" \{.*?accelerator: false", runner, re.S)  # CPU fallback
    assert "modelPath: path" in runner and "checkReference(" in runner
    content = (APPS / "ios/App/ContentView.swift").read_text()
    assert content.startswith("#if canImport(EdgepackSample)\nimport EdgepackSample")  # the CocoaPods route compiles
    package = (APPS / "ios/Package.swift").read_text()
    assert '.iOS("15.1")' in package and ".macOS(" in package
    readme = (APPS / "ios/README.md").read_text()
    assert "platform :ios, '15.1'" in readme and "platform :ios, '15.0'" not in readme
    assert "ORT_POD_LOCAL_PATH" in readme and "ORT_IOS_POD_LOCAL_PATH" not in readme
    assert "pod 'onnxruntime-c', :path =>" in readme and "check_spm_version.sh" in readme
    spm = re.search(r'onnxruntime-swift-package-manager", exact: "([0-9.]+)"', package).group(1)
    pod = re.search(r"pod 'onnxruntime-objc', '([0-9.]+)'", readme).group(1)
    assert spm == pod  # the two routes pin the same onnxruntime


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_spm_version_check_script(tmp_path):
    script = APPS / "ios/check_spm_version.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    fake = tmp_path / "git"  # a git that knows one tag: the script's two answers, without the network
    fake.write_text('#!/bin/sh\ncase "$*" in *refs/tags/1.32.0*) exit 0;; *) exit 2;; esac\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    ok = subprocess.run(["bash", str(script), "1.32.0"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and 'exact: "1.32.0"' in ok.stdout
    missing = subprocess.run(["bash", str(script), "1.99.0"], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "use CocoaPods" in missing.stderr


# ------------------------------------------------------------------------------------- the Android QNN path


def _kotlin_function(path: Path, name: str) -> str:
    """The body of one Kotlin function (up to the next declaration at its indentation)."""
    text = _code(path)
    start = text.index(f"fun {name}(")
    end = re.search(r"\n    (?:private |internal )?(?:fun|val|var|companion) ", text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


def _runtime_schema() -> tuple[set[str], set[str]]:
    """The properties the schema defines for `runtime`, and for one entry of `runtime.models`."""
    runtime = SCHEMA["$defs"]["runtime"]["properties"]
    return set(runtime), set(runtime["models"]["additionalProperties"]["properties"])


def _qnn_reads() -> tuple[set[str], set[str], set[str]]:
    """(runtime fields, runtime.models.<name> fields, toolchain fields) the Android QNN path reads."""
    body = _kotlin_function(KOTLIN / "ManifestReader.kt", "qnnFiles")
    on_runtime = set(re.findall(r'runtime\.(?:get|opt)\w*\(\s*"([^"]+)"', body))
    on_files = set(re.findall(r'files\.(?:get|opt)\w*\(\s*"([^"]+)"', body))
    gradle = (APPS / "android/app/build.gradle.kts").read_text(encoding="utf-8")
    on_toolchain = set(re.findall(r'toolchain\["([^"]+)"\]', gradle))
    return on_runtime, on_files, on_toolchain


FALLBACK_STEPS = re.compile(r'^\s*(\w+)\("([^"]+)", "[^"]+"\)[,;]\s*$', re.M)


def _fallback_steps() -> dict[str, str]:
    """BundleRunner.kt's FallbackStep entries: {name: the words of runtime.fallback_order it answers to}."""
    enum = _code(KOTLIN / "BundleRunner.kt").split("enum class FallbackStep", 1)[1]
    return {name: prefix for name, prefix in FALLBACK_STEPS.findall(enum.split("companion object", 1)[0])}


def test_android_qnn_path_reads_only_runtime_fields_the_schema_defines():
    """Field by field and at the right place: the QNN reads are properties of `runtime` (and of one
    `runtime.models` entry, and of `toolchain`), not just names defined somewhere in the schema."""
    runtime, model_entry = _runtime_schema()
    on_runtime, on_files, on_toolchain = _qnn_reads()
    assert on_runtime == {"execution_provider", "models", "ep_library", "ep_registration_name", "fallback_order", "soc"}
    assert on_files == {"context", "context_binary", "fallback"}
    assert on_runtime <= runtime, sorted(on_runtime - runtime)
    assert on_files <= model_entry, sorted(on_files - model_entry)
    toolchain = set(SCHEMA["properties"]["toolchain"]["properties"])
    assert {"onnxruntime", "onnxruntime-qnn", "qnn_sdk"} <= on_toolchain <= toolchain, sorted(on_toolchain - toolchain)


def test_android_qnn_path_registers_the_plugin_and_follows_the_fallback_order():
    runner = _code(KOTLIN / "BundleRunner.kt")
    assert "env.registerExecutionProviderLibrary(qnn.registrationName," in runner and "nativeLibraryDir" in runner
    assert "env.epDevices.filter { it.epName == qnn.registrationName }" in runner
    assert "addExecutionProvider(devices, manifest.providerOptions" in runner
    open_qnn = _kotlin_function(KOTLIN / "BundleRunner.kt", "openQnn")
    assert "qnn.fallbackOrder.mapNotNull" in open_qnn and "for (step in steps)" in open_qnn  # the manifest's order
    for name in ("context", "contextBinary", "fallback"):
        assert f'copyOut(context, "$dir/${{qnn.{name}}}")' in open_qnn  # one folder: opened by path
    steps = _fallback_steps()
    assert list(steps) == ["QNN_CONTEXT", "QNN_FALLBACK", "NNAPI_FALLBACK", "CPU"]
    for name in steps:
        assert f"FallbackStep.{name}" in open_qnn  # every step has a session
    gradle = (APPS / "android/app/build.gradle.kts").read_text(encoding="utf-8")
    assert 'noCompress += listOf("ort", "onnx", "bin")' in gradle and "useLegacyPackaging = true" in gradle
    assert 'implementation("com.qualcomm.qti:onnxruntime-android-qnn:$qnnPluginVersion")' in gradle
    assert 'findProperty("qnnRuntimeVersion")' in gradle and 'implementation("com.qualcomm.qti:qnn-runtime:$qnnRuntime")' in gradle
    assert 'android:name="libcdsprpc.so"' in (APPS / "android/app/src/main/AndroidManifest.xml").read_text()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_qnn") is None, reason="onnxruntime-qnn is not installed")
def test_android_qnn_path_reads_what_a_real_qnn_bundle_holds(tmp_path):
    """A real android-qnn bundle: its manifest is valid, holds every field the QNN path reads with get*
    (the optional ones too), and every step of its fallback_order is one the app knows, in that order."""
    from edgepack.build import build
    from edgepack.target import load_targets

    [result] = build([SAMPLE / "digits_cnn.onnx"], load_targets(["android-qnn"]), tmp_path, calibration=SAMPLE / "calibration")
    doc = json.loads((result.bundle / "manifest.json").read_text(encoding="utf-8"))
    _validator("manifest.schema.json").validate(doc)
    on_runtime, on_files, on_toolchain = _qnn_reads()
    runtime = doc["runtime"]
    assert on_runtime <= set(runtime), sorted(on_runtime - set(runtime))
    [entry] = runtime["models"].values()
    assert on_files <= set(entry) and all((result.bundle / entry[k]).is_file() for k in on_files)
    assert on_toolchain <= set(doc["toolchain"]), sorted(on_toolchain - set(doc["toolchain"]))
    assert doc["models"][0]["artifact"] == entry["context"]
    steps = _fallback_steps()
    matched = [[n for n, prefix in steps.items() if text.startswith(prefix)] for text in runtime["fallback_order"]]
    assert matched == [["QNN_CONTEXT"], ["QNN_FALLBACK"], ["NNAPI_FALLBACK"], ["CPU"]], runtime["fallback_order"]
