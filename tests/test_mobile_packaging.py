"""The Android and iOS runtime recipes are onnxruntime's packaging commands (an AAR; pods), checked
against onnxruntime's own argument parsers and settings readers (tests/ort_packaging_parsers.py):
the exact words build_runtime.sh runs, the settings files in the bundle, and the build.py command
each packaging script makes from them."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import ort_packaging_parsers as orp
from conftest import REPO, SAMPLE_MODEL
from edgepack.backends.onnxruntime import mobile_packaging as mp
from edgepack.backends.onnxruntime.minimal_build import build_command, build_script, ci_workflow
from edgepack.build import build
from edgepack.target import load_target, load_targets

CALIB = REPO / "sample_apps" / "model" / "calibration"
VERSION = "1.32.0"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile")
    return {r.target: r.bundle for r in build([SAMPLE_MODEL], load_targets(["android-nnapi", "ios-coreml"]), out,
                                                calibration=CALIB)}


def _packaging_words(script: str, bundle: str = "/b", settings: str | None = None) -> list[str]:
    """The words of the packaging command in build_runtime.sh, as bash splits and expands them."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("python3 tools/ci_build/github/"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    command = "\n".join(lines[start:end + 1]).replace("python3 ", "printf '%s\\n' ", 1)
    setup = f'BUNDLE_DIR={bundle} ANDROID_SDK_ROOT=/sdk ANDROID_NDK_HOME=/ndk SETTINGS={settings or "/none"}\n'
    done = subprocess.run(["bash", "-c", setup + command], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


# ------------------------------------------------------------------------------------------ Android AAR


@needs_bash
def test_android_recipe_is_build_aar_package_with_java_and_the_reduced_config(bundles):
    bundle = bundles["android-nnapi"]
    words = _packaging_words((bundle / "build_runtime.sh").read_text(), str(bundle),
                             str(bundle / "runtime" / "android_aar_build_settings.json"))
    assert words[0] == mp.AAR_SCRIPT
    args, settings, argvs = orp.aar_build_py_argvs(words[1:], lambda p: p.read_text())
    assert args.config == "MinSizeRel" and args.build_dir == "build/edgepack"
    assert args.include_ops_by_config == str(bundle / "required_operators_and_types.config")
    assert settings["build_abis"] == ["arm64-v8a"] and settings["android_min_sdk_version"] == 29
    assert len(argvs) == 1
    for host in ("linux", "macos"):  # an Android build runs on either
        ns = orp.parse_build_py(argvs[0], host)
        assert ns.android and ns.android_abi == "arm64-v8a" and ns.android_api == 29
        assert ns.build_java and ns.build_shared_lib  # the JNI library and the Java classes: an AAR an app links
        assert ns.minimal_build == ["extended"] and ns.use_nnapi
        assert ns.disable_exceptions and ns.disable_rtti and ns.disable_ml_ops and ns.skip_tests
        assert ns.include_ops_by_config == str(bundle / "required_operators_and_types.config")
        assert ns.enable_reduced_operator_type_support and ns.config == ["MinSizeRel"]


@needs_bash
def test_as_root_on_linux_the_script_adds_allow_running_as_root(bundles, tmp_path):
    """build.py refuses root without --allow_running_as_root, a flag only its Linux parser has: the
    script adds it exactly when it runs as root on Linux (a CI container), in a copy of the settings."""
    bundle = bundles["android-nnapi"]
    script = (bundle / "build_runtime.sh").read_text()
    block = script[script.index('SETTINGS="$BUNDLE_DIR/'):script.index('cd "$ORT_SRC"\npython3')]
    outcomes = {}
    for system, uid in (("Linux", "0"), ("Linux", "1000"), ("Darwin", "0")):
        src = tmp_path / f"ort-{system}-{uid}"
        fake = f'uname() {{ echo {system}; }}; id() {{ echo {uid}; }}\nBUNDLE_DIR={bundle} ORT_SRC={src}\n'
        done = subprocess.run(["bash", "-c", fake + block + 'echo "$SETTINGS"'], capture_output=True, text=True,
                              check=True)
        outcomes[(system, uid)] = done.stdout.strip().splitlines()[-1]
    root = outcomes[("Linux", "0")]
    assert root.startswith(str(tmp_path)) and not root.startswith(str(bundle))  # beside the build, not in the bundle
    assert outcomes[("Linux", "1000")] == outcomes[("Darwin", "0")] == str(bundle / mp.AAR_SETTINGS)
    params = json.loads(open(root).read())["build_params"]
    assert params[-1] == "--allow_running_as_root"
    argv = [*params, "--config=MinSizeRel", "--android_abi=arm64-v8a", "--build_dir=x"]
    assert orp.parse_build_py(argv, "linux").allow_running_as_root
    with pytest.raises(orp.BuildArgsError, match="unrecognized arguments: --allow_running_as_root"):
        orp.parse_build_py(argv, "macos")


def test_android_ci_workflow_uploads_the_aar_and_sets_up_java():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(ci_workflow(load_target("android-nnapi"), VERSION))
    steps = doc["jobs"]["build"]["steps"]
    assert any(s.get("uses", "").startswith("actions/setup-java") and s["with"]["java-version"] == "17" for s in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "onnxruntime/build/edgepack/onnxruntime-release.aar" in upload["with"]["path"]
    assert ".so" not in upload["with"]["path"]


# ------------------------------------------------------------------------------------------ iOS pods


@needs_bash
def test_ios_recipe_is_build_and_assemble_apple_pods_with_framework_coreml_and_a_simulator(bundles):
    bundle = bundles["ios-coreml"]
    words = _packaging_words((bundle / "build_runtime.sh").read_text(), str(bundle),
                             str(bundle / "runtime" / "apple_framework_build_settings.json"))
    assert words[0] == mp.PODS_SCRIPT
    pods, fw, settings, argvs = orp.pods_build_py_argvs(words[1:], lambda p: open(p).read())
    assert pods.variant == "Full" and str(pods.staging_dir) == "build/edgepack/pods"
    assert pods.include_ops_by_config == str(bundle / "required_operators_and_types.config")
    assert fw.config == "MinSizeRel"
    slices = {(s, a) for s, a, _ in argvs}
    assert ("iphoneos", "arm64") in slices and ("iphonesimulator", "arm64") in slices
    assert ("iphonesimulator", "x86_64") in slices and ("macosx", "arm64") in slices
    for sysroot, arch, argv in argvs:
        ns = orp.parse_build_py(argv, "macos")  # the iOS build runs on macOS only
        assert ns.build_apple_framework and ns.use_coreml and ns.minimal_build == ["extended"]
        assert ns.cmake_generator == "Xcode" and ns.apple_sysroot == sysroot and ns.osx_arch == arch
        assert ns.include_ops_by_config == str(bundle / "required_operators_and_types.config")
        assert ns.enable_reduced_operator_type_support and ns.disable_ml_ops and ns.config == ["MinSizeRel"]
        if sysroot == "macosx":
            assert ns.macos == "MacOSX"
        else:
            assert ns.ios and ns.apple_deploy_target == "15.1"  # onnxruntime's pods need iOS 15.1


def test_ios_ci_workflow_uploads_the_pods():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(ci_workflow(load_target("ios-coreml"), VERSION))
    upload = next(s for s in doc["jobs"]["build"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "onnxruntime/build/edgepack/pods/" in upload["with"]["path"]
    assert ".framework/**" not in upload["with"]["path"]
    assert doc["jobs"]["build"]["runs-on"].startswith("macos")


def test_podfile_lines_name_both_local_pods():
    assert mp.podfile_lines() == ["pod 'onnxruntime-objc', :path => 'build/edgepack/pods/onnxruntime-objc'",
                                  "pod 'onnxruntime-c', :path => 'build/edgepack/pods/onnxruntime-c'"]


# ------------------------------------------------------------------------------------------ the checks discriminate


@pytest.mark.parametrize(("argv", "host", "message"), [
    (["--build_dir", "b", "--build-java"], "linux", "unrecognized arguments: --build-java"),
    (["--build_dir", "b", "--disable_exceptions"], "linux", "requires --minimal_build"),
    (["--build_dir", "b", "--build_apple_framework", "--use_coreml"], "macos", "requires --ios, --macos"),
    (["--build_dir", "b", "--macos", "MacOSX"], "macos", "requires --build_apple_framework"),
    (["--build_dir", "b", "--ios"], "linux", "unrecognized arguments: --ios"),
    (["--build_dir", "b", "--android_abi", "arm64"], "linux", "invalid choice: 'arm64'"),
])
def test_the_build_py_parser_refuses_what_build_py_refuses(argv, host, message):
    with pytest.raises(orp.BuildArgsError, match=message):
        orp.parse_build_py(argv, host)


def test_a_pass_through_flag_needs_the_equals_form():
    """``-b --config=X`` is an option for the pods script itself (error); ``--build-apple-framework-arg=--config=X``
    reaches build_apple_framework.py: the form edgepack writes."""
    with pytest.raises(orp.BuildArgsError, match="expected one argument"):
        orp.pods_parser().parse_args(["--build-settings-file", "s.json", "-b", "--config=MinSizeRel"])
    ok = orp.pods_parser().parse_args(["--build-settings-file", "s.json", "--build-apple-framework-arg=--config=MinSizeRel"])
    assert ok.build_apple_framework_extra_args == ["--config=MinSizeRel"]


def test_settings_readers_refuse_malformed_settings():
    with pytest.raises(ValueError, match="build_params is required"):
        orp.aar_build_settings({"build_abis": ["arm64-v8a"]})
    with pytest.raises(ValueError, match="cannot be larger"):
        orp.aar_build_settings({"build_params": [], "android_min_sdk_version": 35, "android_target_sdk_version": 34})
    with pytest.raises(ValueError, match="not a list of strings"):
        orp.apple_build_settings({"build_params": {"base": "--use_coreml"}})


# ------------------------------------------------------------------------------------------ the generator


@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml"])
def test_manifest_records_the_packaging_command_and_settings(bundles, target):
    doc = json.loads((bundles[target] / "manifest.json").read_text())
    rb = doc["reduced_build"]
    assert rb["build_command"][1] in (mp.AAR_SCRIPT, mp.PODS_SCRIPT)
    assert rb["build_settings"] in {a["path"] for a in doc["artifacts"]}
    assert ("Android archive" in rb["produces"]) == (target == "android-nnapi")


def test_profile_flags_are_split_between_the_script_and_build_py():
    profile = load_target("android-nnapi")
    settings = mp.aar_settings(profile, uses_ml_ops=True)
    assert "--disable_ml_ops" not in settings["build_params"]  # the model needs ai.onnx.ml: kept
    for owned in ("--config", "--android_abi", "--android_api", "MinSizeRel", "arm64-v8a", "29"):
        assert owned not in settings["build_params"]
    ios = mp.apple_settings(load_target("ios-coreml"), uses_ml_ops=False)
    for owned in ("--apple_sysroot", "iphoneos", "--osx_arch", "--ios", "--build_shared_lib"):
        assert owned not in ios["build_params"]["base"]


@needs_bash
@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml"])
def test_build_script_is_valid_bash_with_no_absolute_paths(target):
    text = build_script(load_target(target), ort_version=VERSION, uses_ml_ops=False)
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    body = text.split("\n", 1)[1]
    assert " /" not in body.replace(" /dev/null", "")
    assert build_command(load_target(target), ort_version=VERSION, uses_ml_ops=False)[0] == "python3"
