"""The reduced mobile runtime as something an app links: onnxruntime's own packaging commands.

Android: ``tools/ci_build/github/android/build_aar_package.py`` with a build-settings JSON (the
profile's flags plus ``--build_java``, so the AAR holds the JNI library and the Java classes) gives
``onnxruntime-release.aar``. iOS: ``tools/ci_build/github/apple/build_and_assemble_apple_pods.py``
with a build-settings JSON (``--build_apple_framework``, a device, a simulator and a macOS slice)
gives the ``onnxruntime-c`` and ``onnxruntime-objc`` pods (and the C pod as the zip archive the
Swift package takes through ``ORT_POD_LOCAL_PATH``). Both get the bundle's operator config.

The settings JSON and command lines follow the scripts' argument parsers and settings readers
(``build_aar_package.py``'s ``_parse_build_settings``, ``build_settings_utils.parse_build_settings_file``,
``tools/ci_build/build_args.py``); ``tests/ort_packaging_parsers.py`` re-states those parsers and
``tests/test_mobile_packaging.py`` parses what this module writes with them.

Profile flags reach the settings files as JSON strings (the scripts pass them to build.py as argv
items, never through a shell), and the settings files are data in the bundle.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ...errors import StageError

if TYPE_CHECKING:
    from ...target import TargetProfile

SETTINGS_DIR = "runtime"
AAR_SETTINGS = f"{SETTINGS_DIR}/android_aar_build_settings.json"
APPLE_SETTINGS = f"{SETTINGS_DIR}/apple_framework_build_settings.json"
AAR_SCRIPT = "tools/ci_build/github/android/build_aar_package.py"
PODS_SCRIPT = "tools/ci_build/github/apple/build_and_assemble_apple_pods.py"
AAR_TARGET_SDK = 34  # the sample app's targetSdk; onnxruntime's own default in build_aar_package.py
AAR_NAME = "onnxruntime-release.aar"
POD_VARIANT = "Full"  # pods named onnxruntime-c / onnxruntime-objc (c/onnxruntime-c.config.json, objectivec/...)
POD_NAMES = ("onnxruntime-c", "onnxruntime-objc")
IOS_SYSROOTS = ("iphoneos", "iphonesimulator")
APPLE_ARCHS = {"iphoneos": ["arm64"], "iphonesimulator": ["arm64", "x86_64"], "macosx": ["arm64"]}
MACOS_DEPLOY_TARGET = "11.0"  # the macOS slice (the Swift package declares a macOS platform)

# flags the packaging scripts set themselves, per sysroot/ABI: taken out of the profile's list
_AAR_OWN = {"--config": 1, "--android_abi": 1, "--android_api": 1, "--android_sdk_path": 1, "--android_ndk_path": 1,
            "--build_dir": 1, "--include_ops_by_config": 1}
_APPLE_OWN = {"--config": 1, "--ios": 0, "--apple_sysroot": 1, "--osx_arch": 1, "--apple_deploy_target": 1,
              "--build_dir": 1, "--include_ops_by_config": 1, "--build_shared_lib": 0, "--use_xcode": 0}


def _split(flags: list[str], own: dict[str, int]) -> tuple[list[str], dict[str, str]]:
    """(the flags build.py gets from the settings file, {flag: value} of those the script owns)."""
    rest: list[str] = []
    taken: dict[str, str] = {}
    i = 0
    while i < len(flags):
        flag = flags[i]
        name, eq, inline = flag.partition("=")
        if name in own:
            if own[name] and not eq:
                taken[name] = flags[i + 1] if i + 1 < len(flags) else ""
                i += 2
                continue
            taken[name] = inline if eq else ""
            i += 1
            continue
        rest.append(flag)
        i += 1
    return rest, taken


def _reduction_flags(flags: list[str], uses_ml_ops: bool, type_reduction: bool) -> list[str]:
    out = []
    if type_reduction and "--enable_reduced_operator_type_support" not in flags:
        out.append("--enable_reduced_operator_type_support")
    if not uses_ml_ops and "--disable_ml_ops" not in flags:
        out.append("--disable_ml_ops")
    if "--skip_tests" not in flags:
        out.append("--skip_tests")
    return out


def aar_settings(profile: TargetProfile, *, uses_ml_ops: bool, type_reduction: bool = True) -> dict[str, Any]:
    """``build_aar_package.py``'s settings file: ABIs, API levels and build.py's parameters."""
    rest, taken = _split(list(profile.minimal_build_flags), _AAR_OWN)
    abi = taken.get("--android_abi") or profile.abi or "arm64-v8a"
    try:
        min_sdk = int(taken.get("--android_api") or 24)
    except ValueError as exc:
        msg = f"reduce: target '{profile.name}': --android_api must be a number, not {taken['--android_api']!r}"
        raise StageError(msg) from exc
    params = [f for f in rest]
    if "--android" not in params:
        params.insert(0, "--android")
    for needed in ("--build_java", "--build_shared_lib"):  # the AAR needs the JNI library and the Java classes
        if needed not in params:
            params.append(needed)
    params += _reduction_flags(params, uses_ml_ops, type_reduction)
    return {"build_abis": [abi], "android_min_sdk_version": min_sdk,
            "android_target_sdk_version": max(AAR_TARGET_SDK, min_sdk), "build_params": params}


def apple_settings(profile: TargetProfile, *, uses_ml_ops: bool, type_reduction: bool = True) -> dict[str, Any]:
    """``build_apple_framework.py``'s settings file: device, simulator and macOS slices and build.py's parameters."""
    rest, taken = _split(list(profile.minimal_build_flags), _APPLE_OWN)
    deploy = taken.get("--apple_deploy_target") or "15.1"
    base = ["--use_xcode", "--build_apple_framework", *rest]
    base += _reduction_flags(base, uses_ml_ops, type_reduction)
    base.append("--cmake_extra_defines=onnxruntime_BUILD_UNIT_TESTS=OFF")
    params = {"base": base, **{s: ["--ios", f"--apple_deploy_target={deploy}"] for s in IOS_SYSROOTS},
              "macosx": ["--macos=MacOSX", f"--apple_deploy_target={MACOS_DEPLOY_TARGET}"]}
    return {"build_osx_archs": APPLE_ARCHS, "build_params": params}


def settings_file(packaging: str) -> str:
    return AAR_SETTINGS if packaging == "aar" else APPLE_SETTINGS


def settings_doc(profile: TargetProfile, packaging: str, *, uses_ml_ops: bool, type_reduction: bool = True) -> dict:
    make = aar_settings if packaging == "aar" else apple_settings
    return make(profile, uses_ml_ops=uses_ml_ops, type_reduction=type_reduction)


_ROOT_SETTINGS = """
# onnxruntime's build.py refuses to run as root without --allow_running_as_root (a Linux-only flag);
# CI containers run as root: build with the same settings plus that flag, written beside the build
if [ "$(uname -s)" = "Linux" ] && [ "$(id -u)" = "0" ]; then
  mkdir -p "$ORT_SRC/@BUILD@"
  ROOT_SETTINGS="$(cd "$ORT_SRC/@BUILD@" && pwd)/@NAME@"
  python3 - "$SETTINGS" "$ROOT_SETTINGS" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1], encoding="utf-8"))
doc["build_params"].append("--allow_running_as_root")
json.dump(doc, open(sys.argv[2], "w", encoding="utf-8"), indent=2)
PY
  SETTINGS="$ROOT_SETTINGS"
fi
"""


def settings_lines(packaging: str, build_dir: str) -> str:
    """build_runtime.sh: where the settings file is, and (Android, as root on Linux) the copy with the root flag."""
    rel = settings_file(packaging)
    text = f'\nSETTINGS="$BUNDLE_DIR/{rel}"  # the build settings onnxruntime\'s packaging script reads\n'
    if packaging == "aar":
        name = rel.rsplit("/", 1)[-1].replace(".json", ".root.json")
        text += _ROOT_SETTINGS.replace("@BUILD@", build_dir).replace("@NAME@", name)
    return text


def build_config(profile: TargetProfile) -> str:
    flags = list(profile.minimal_build_flags)
    _, taken = _split(flags, {"--config": 1})
    return taken.get("--config") or "Release"


def aar_command(profile: TargetProfile, *, config_name: str, settings: str, build_dir: str) -> list[str]:
    """The command (run in an onnxruntime checkout) that builds the AAR."""
    return ["python3", AAR_SCRIPT, "--build_dir", build_dir, "--config", build_config(profile),
            "--android_sdk_path", "$ANDROID_SDK_ROOT", "--android_ndk_path", "$ANDROID_NDK_HOME",
            "--include_ops_by_config", config_name, settings]


def pods_command(profile: TargetProfile, *, config_name: str, settings: str, build_dir: str) -> list[str]:
    """The command (run in an onnxruntime checkout) that builds the framework and assembles the pods."""
    return ["python3", PODS_SCRIPT, "--build-dir", build_dir, "--staging-dir", f"{build_dir}/pods",
            "--variant", POD_VARIANT, "--include-ops-by-config", config_name, "--build-settings-file", settings,
            f"--build-apple-framework-arg=--config={build_config(profile)}"]


def settings_json(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"


# build_runtime.sh: after the packaging command, what the build leaves where the workflow finds it
AAR_AFTER = """
# build_aar_package.py publishes the AAR into a local Maven layout under aar_out/; keep one stable name
AAR="$(find "@BUILD@/aar_out/@CONFIG@" -name '*.aar' | head -n 1)"
if [ -z "$AAR" ]; then
  echo "error: build_aar_package.py produced no .aar under @BUILD@/aar_out/@CONFIG@" >&2
  exit 1
fi
cp "$AAR" "@BUILD@/@AAR_NAME@"
echo "built: $ORT_SRC/@BUILD@/@AAR_NAME@ (copy it to app/libs/ of your Android app)"
"""

PODS_AFTER = """
# the C pod as the zip archive onnxruntime's Swift package takes (ORT_POD_LOCAL_PATH, relative to its Package.swift)
(cd "@BUILD@/pods/onnxruntime-c" && zip -qry "../pod-archive-onnxruntime-c-$ORT_VERSION.zip" .)
echo "built: $ORT_SRC/@BUILD@/pods/onnxruntime-c and onnxruntime-objc (Podfile: pod ..., :path => ...)"
echo "built: $ORT_SRC/@BUILD@/pods/pod-archive-onnxruntime-c-$ORT_VERSION.zip (Swift Package Manager: ORT_POD_LOCAL_PATH)"
"""


def after_lines(kind: str, build_dir: str, config: str) -> str:
    text = AAR_AFTER if kind == "aar" else PODS_AFTER
    return text.replace("@BUILD@", build_dir).replace("@CONFIG@", config).replace("@AAR_NAME@", AAR_NAME)


def podfile_lines(pods_dir: str = "build/edgepack/pods") -> list[str]:
    """The Podfile lines that use the locally built pods (onnxruntime-objc depends on onnxruntime-c)."""
    return [f"pod '{name}', :path => '{pods_dir}/{name}'" for name in reversed(POD_NAMES)]
