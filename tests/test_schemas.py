"""JSON Schemas in schemas/: every profile in targets/ and every manifest edgepack builds validates."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from edgepack import target as target_mod
from edgepack.build import build
from edgepack.target import load_targets

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
SAMPLE = REPO / "sample_apps" / "model"
ORT_TARGETS = ("android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu")
OPENVINO_TARGETS = ("intel-openvino",)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def build_bundles(out: Path) -> dict[str, Path]:
    """Bundles of the sample model for every target `edgepack build` supports on this checkout."""
    bundles = {}
    for r in build([SAMPLE / "digits_cnn.onnx"], load_targets(list(ORT_TARGETS)), out, calibration=SAMPLE / "calibration"):
        bundles[r.target] = r.bundle
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:  # the openvino extra (part of dev)
        for r in build([SAMPLE / "digits_cnn.onnx"], load_targets(list(OPENVINO_TARGETS)), out,
                       calibration=SAMPLE / "calibration"):
            bundles[r.target] = r.bundle
    return bundles


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    return build_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def manifest_validator():
    return _validator("manifest.schema.json")


@pytest.fixture(scope="module")
def profile_validator():
    return _validator("profile.schema.json")


# ------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("path", sorted((REPO / "targets").glob("*.toml")), ids=lambda p: p.stem)
def test_every_profile_validates(path, profile_validator):
    assert _errors(profile_validator, tomllib.loads(path.read_text(encoding="utf-8"))) == []


def test_profile_schema_is_generated_from_target_schema():
    sys.path.insert(0, str(SCHEMAS))
    try:
        import generate_profile_schema as gen
    finally:
        sys.path.remove(str(SCHEMAS))
    committed = (SCHEMAS / "profile.schema.json").read_text(encoding="utf-8")
    assert gen.render() == committed, "run: python schemas/generate_profile_schema.py"


def test_profile_generator_check_mode():
    proc = subprocess.run([sys.executable, str(SCHEMAS / "generate_profile_schema.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def _rpi4() -> dict:
    return tomllib.loads((REPO / "targets" / "rpi4-cpu.toml").read_text(encoding="utf-8"))


def _drop(doc, *path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


def _set(doc, value, *path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _drop(d, "name"), "'name' is a required property"),
        (lambda d: _drop(d, "runtime", "engine"), "'engine' is a required property"),
        (lambda d: _set(d, "tpu", "runtime", "execution_provider"), "is not one of"),
        (lambda d: _set(d, "1", "shapes", "default_batch"), "is not of type 'integer'"),
        (lambda d: _set(d, 0, "shapes", "default_batch"), "less than the minimum"),
        (lambda d: _set(d, True, "device", "idle_w"), "is not of type 'number'"),
        (lambda d: _set(d, 1, "runtim"), "('runtim' was unexpected)"),
        (lambda d: _set(d, [{"reason": "x"}], "quantization"), "'name' is a required property"),
        (lambda d: _set(d, {"fp32": "fast"}, "device", "units", "cpu", "peak_gops"), "is not of type 'number'"),
    ],
    ids=["no-name", "no-engine", "bad-provider", "batch-string", "batch-zero", "bool-figure", "unknown-key",
         "recipe-no-name", "figure-string"],
)
def test_broken_profile_fails(mutate, expected, profile_validator):
    errors = _errors(profile_validator, mutate(_rpi4()))
    assert any(expected in e for e in errors), errors


def test_partial_profile_with_extends_validates_but_unknown_keys_do_not(profile_validator):
    child = {"extends": "rpi4-cpu", "name": "my-pi", "device": {"idle_w": 2.0}}
    assert _errors(profile_validator, child) == []
    assert _errors(profile_validator, {**child, "devcie": {}}) != []


def test_profile_schema_enums_match_target_module():
    schema = json.loads((SCHEMAS / "profile.schema.json").read_text(encoding="utf-8"))
    runtime = schema["$defs"]["complete"]["properties"]["runtime"]["properties"]
    assert runtime["engine"]["enum"] == list(target_mod.ENGINES)
    assert runtime["execution_provider"]["enum"] == list(target_mod.EXECUTION_PROVIDERS)


# ------------------------------------------------------------------------------------- manifests


def test_every_built_manifest_validates(bundles, manifest_validator):
    assert set(ORT_TARGETS) <= set(bundles)
    for name, bundle in bundles.items():
        doc = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        assert _errors(manifest_validator, doc) == [], name


def test_multi_model_manifest_validates(tmp_path, manifest_validator):
    """Two models: top-level source_model/coverage/verification/recipe.* become maps of model name -> object."""
    import shutil

    for name in ("digits_a", "digits_b"):
        shutil.copyfile(SAMPLE / "digits_cnn.onnx", tmp_path / f"{name}.onnx")
    (r,) = build([tmp_path / "digits_a.onnx", tmp_path / "digits_b.onnx"], load_targets(["rpi4-cpu"]), tmp_path / "out",
                 calibration=SAMPLE / "calibration")
    doc = r.manifest
    assert set(doc["source_model"]) == {"digits_a", "digits_b"}
    assert _errors(manifest_validator, doc) == []


def _sample_manifest(bundles, name="android-nnapi") -> dict:
    return json.loads((bundles[name] / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: _drop(d, "runtime"), "'runtime' is a required property"),
        (lambda d: _drop(d, "toolchain"), "'toolchain' is a required property"),
        (lambda d: _drop(d, "models", 0, "artifact"), "'artifact' is a required property"),
        (lambda d: _set(d, "1", "schema_version"), "1 was expected"),
        (lambda d: _set(d, 2, "schema_version"), "1 was expected"),
        (lambda d: _set(d, "NPU", "runtime", "execution_provider"), "is not one of"),
        (lambda d: _set(d, 1, "runtime", "session_config", "session.enable_saved_runtime_optimizations"),
         "is not of type 'string'"),
        (lambda d: _set(d, "big", "artifacts", 0, "bytes"), "is not of type 'integer'"),
        (lambda d: _set(d, "xyz", "artifacts", 0, "sha256"), "does not match"),
        (lambda d: _set(d, "../evil", "artifacts", 0, "path"), "does not match"),
        (lambda d: _set(d, "yes", "models", 0, "verification", "passed"), "is not of type 'boolean'"),
        (lambda d: _set(d, "int4", "models", 0, "quantization", "recipe"), "is not one of"),
        (lambda d: _set(d, 1, "runtime", "extra"), "('extra' was unexpected)"),
        (lambda d: _set(d, 1, "surprise"), "('surprise' was unexpected)"),
        (lambda d: _set(d, {"size": {"value": 1}}, "estimates"), "is not valid under any of the given schemas"),
    ],
    ids=["no-runtime", "no-toolchain", "no-artifact", "version-string", "version-2", "bad-provider",
         "config-int", "bytes-string", "bad-sha", "path-escape", "passed-string", "bad-recipe", "runtime-extra",
         "top-extra", "estimate-incomplete"],
)
def test_broken_manifest_fails(bundles, manifest_validator, mutate, expected):
    doc = mutate(copy.deepcopy(_sample_manifest(bundles)))
    errors = _errors(manifest_validator, doc)
    assert any(expected in e for e in errors), errors


def test_estimates_block_is_optional_and_typed(bundles, manifest_validator):
    doc = _sample_manifest(bundles, "rpi4-cpu")
    est = {"value": 1.0, "low": 0.5, "high": 2.0, "unit": "ms", "method": "roofline", "assumptions": ["4 threads"]}
    doc["estimates"] = {"size": {**est, "unit": "bytes"}, "latency_ms": est, "energy": {**est, "unit": "mJ"}}
    assert _errors(manifest_validator, doc) == []
    doc["estimates"]["energy"]["value"] = "1 mJ"
    assert _errors(manifest_validator, doc) != []


def test_openvino_shaped_manifest_validates(bundles, manifest_validator):
    """What an OpenVINO bundle is expected to look like: IR artifact, runtime device/config, free-form reduced_build."""
    doc = _sample_manifest(bundles, "rpi4-cpu")
    doc["target"].update(name="intel-openvino", family="intel", engine="openvino", execution_provider="OpenVINO",
                         arch="x86_64", provider_options={})
    doc["models"][0]["artifact"] = "model.xml"
    doc["models"][0]["conversion"] = {"openvino_version": "2025.3.0", "compress_to_fp16": True}
    doc["runtime"] = {"execution_provider": "OpenVINO", "provider_options": {}, "session_config": {}}
    doc["reduced_build"] = {"runtime": "openvino", "openvino_version": "2025.3.0", "requirements": "requirements.txt",
                            "runtime_config": "runtime_config.json", "op_count": 9, "op_types": ["Convolution"]}
    doc["toolchain"]["openvino"] = "2025.3.0"
    assert _errors(manifest_validator, doc) == []
    # the same free-form reduced_build on an ONNX Runtime bundle is an error
    doc["target"]["engine"] = "onnxruntime"
    assert _errors(manifest_validator, doc) != []


def test_manifest_schema_enums_match_target_module():
    schema = json.loads((SCHEMAS / "manifest.schema.json").read_text(encoding="utf-8"))
    target = schema["properties"]["target"]["properties"]
    assert target["engine"]["enum"] == list(target_mod.ENGINES)
    assert target["execution_provider"]["enum"] == list(target_mod.EXECUTION_PROVIDERS)
    assert schema["$defs"]["runtime"]["properties"]["execution_provider"]["enum"] == list(target_mod.EXECUTION_PROVIDERS)
    assert schema["$defs"]["quantization"]["properties"]["recipe"]["enum"] == list(target_mod.RECIPES)
