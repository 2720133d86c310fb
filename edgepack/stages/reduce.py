"""Operator reduction: the ops-and-types config for a minimal ONNX Runtime, and the recipe to build it.

The config comes from onnxruntime's own machinery (``onnxruntime.tools.ort_format_model``, which
``convert_onnx_models_to_ort --enable_type_reduction`` uses), run on the FINAL .ort files of every
model of a bundle at once (onnxruntime#16742, #23018). The tool writes the absolute path of each
model in comment lines; we replace them with bundle-relative names so the file is reproducible.

The runtime must be built from the same onnxruntime version that wrote the .ort (onnxruntime#8044),
so the build script clones tag ``v<ort_version>`` and checks ``VERSION_NUMBER``.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StageError
from ..profile_checks import require_safe_for_scripts
from . import _ort_tools

if TYPE_CHECKING:
    from ..target import TargetProfile

CONFIG_NAME = "required_operators_and_types.config"
ML_DOMAIN = "ai.onnx.ml"
BUILD_DIR = "build/edgepack"
_RELEASE = re.compile(r"^\d+\.\d+\.\d+$")


# ------------------------------------------------------------------------------------- the config


def _label(path: Path, base: Path) -> str:
    """A bundle-relative name for ``path`` (its file name when it lies outside the bundle)."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.name


def operator_config(ort_files: list[Path], dst: Path, *, type_reduction: bool = True) -> dict[str, Any]:
    """Write the ops (and types) config for all ``ort_files`` to ``dst`` and describe it.

    Lines are sorted by domain, opset and op (onnxruntime's own order); comment lines name the
    models relative to ``dst``'s folder. Returns ``ops`` per domain, ``opsets`` per domain,
    ``uses_ml_ops``, ``lines`` and the sources.
    """
    if not ort_files:
        msg = "reduce: no .ort files to build an operator config from"
        raise StageError(msg)
    files = [Path(f) for f in ort_files]
    for f in files:
        if not f.is_file():
            msg = f"reduce: .ort file not found: {f.name}"
            raise StageError(msg)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:  # create_config_from_models' lines, without its copies of every .ort in memory
        try:
            body = _ort_tools.required_ops_and_types(files, type_reduction)
        except (AttributeError, ImportError):  # onnxruntime's tool internals moved: its public entry point
            _ort_tools.ort_format_model().create_config_from_models(files, dst, type_reduction)
            body = [line for line in dst.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    except Exception as exc:  # RuntimeError for non-ORT files, flatbuffers errors for damaged ones
        msg = f"reduce: onnxruntime could not read the ops of {', '.join(f.name for f in files)}: {exc}"
        raise StageError(msg) from exc
    sources = sorted(_label(f, dst.parent) for f in files)
    header = ["# Generated from ORT format model(s):", *[f"# - {name}" for name in sources]]
    dst.write_text("\n".join([*header, *body]) + "\n", encoding="utf-8", newline="\n")
    return {**describe_config(dst, type_reduction=type_reduction), "sources": sources}


def describe_config(path: Path, *, type_reduction: bool = True) -> dict[str, Any]:
    """Parse a config with onnxruntime's own parser: ops and opsets per domain, ML ops, line count."""
    parse_config = _ort_tools.parse_config()
    try:
        required, _ = parse_config(str(path), type_reduction)
    except Exception as exc:
        msg = f"reduce: {Path(path).name} is not a valid operator config: {exc}"
        raise StageError(msg) from exc
    ops = {d: sorted({op for v in required[d].values() for op in v}) for d in sorted(required)}
    opsets = {d: sorted(required[d]) for d in sorted(required)}
    text = Path(path).read_text(encoding="utf-8")
    return {
        "type_reduction": type_reduction,
        "ops": ops,
        "opsets": opsets,
        "op_count": sum(len(v) for v in ops.values()),
        "uses_ml_ops": bool(ops.get(ML_DOMAIN)),
        "lines": len(text.splitlines()),
    }


# ------------------------------------------------------------------------------- the build recipe


def _check_buildable(profile: TargetProfile, ort_version: str) -> None:
    if profile.engine != "onnxruntime" or profile.minimal_build_level == "none":
        msg = f"reduce: target '{profile.name}' does not use an ONNX Runtime minimal build"
        raise StageError(msg)
    if not _RELEASE.match(ort_version):
        msg = f"reduce: onnxruntime {ort_version} is not a release with a git tag; convert with a released onnxruntime"
        raise StageError(msg)


def build_command(
    profile: TargetProfile,
    *,
    config_name: str = CONFIG_NAME,
    ort_version: str,
    uses_ml_ops: bool,
    type_reduction: bool = True,
) -> list[str]:
    """The ``./build.sh`` command (run in an onnxruntime checkout) for ``profile``'s minimal runtime.

    Profile flags first, then: Android SDK/NDK paths as ``$ANDROID_SDK_ROOT``/``$ANDROID_NDK_HOME``
    (left for the shell), the ops config, ``--enable_reduced_operator_type_support`` when the config
    has types, ``--disable_ml_ops`` only when no ai.onnx.ml op is needed, ``--skip_tests`` (the unit
    tests need ops a reduced build drops) and a fixed ``--build_dir``.
    """
    _check_buildable(profile, ort_version)
    flags = list(profile.minimal_build_flags)
    if uses_ml_ops and "--disable_ml_ops" in flags:
        msg = f"reduce: target '{profile.name}' builds with --disable_ml_ops but the model uses ai.onnx.ml operators"
        raise StageError(msg)
    cmd = ["./build.sh", "--build_dir", BUILD_DIR, *flags]
    if "--android" in flags and "--android_sdk_path" not in flags:
        cmd += ["--android_sdk_path", "$ANDROID_SDK_ROOT", "--android_ndk_path", "$ANDROID_NDK_HOME"]
    cmd += ["--include_ops_by_config", config_name]
    if type_reduction:
        cmd.append("--enable_reduced_operator_type_support")
    if not uses_ml_ops and "--disable_ml_ops" not in flags:
        cmd.append("--disable_ml_ops")
    if "--skip_tests" not in flags:
        cmd.append("--skip_tests")
    return cmd


def _shell_arg(arg: str) -> str:
    """Quote for bash; only our own ``$ANDROID_SDK_ROOT``, ``$ANDROID_NDK_HOME`` and ``$BUNDLE_DIR/...``
    stay expandable (in double quotes): every profile flag is single-quoted as needed by shlex."""
    if re.match(r"^\$(ANDROID_SDK_ROOT|ANDROID_NDK_HOME|BUNDLE_DIR)(/[A-Za-z0-9_./-]*)?$", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def _render(cmd: list[str]) -> str:
    """One ``--flag value...`` group per line, joined with backslashes."""
    groups: list[list[str]] = [[cmd[0]]]
    for arg in cmd[1:]:
        if arg.startswith("--"):
            groups.append([arg])
        else:
            groups[-1].append(arg)
    lines = [" ".join(_shell_arg(a) for a in g) for g in groups]
    return " \\\n  ".join(lines) + ' \\\n  ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}'


_FLATBUFFERS_CHECK = """
# --enable_reduced_operator_type_support reads the per-op types with the flatbuffers package.
if ! python3 -c "import flatbuffers" 2>/dev/null; then
  echo "error: the reduced-types build needs the python package 'flatbuffers' (python3 -m pip install flatbuffers)" >&2
  exit 1
fi
"""

_PLATFORM_CHECKS = {
    "android": """\
# Android: cross-compiled on Linux or macOS with the Android SDK and NDK.
: "${ANDROID_SDK_ROOT:?set ANDROID_SDK_ROOT to your Android SDK folder}"
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to an Android NDK folder (e.g. $ANDROID_SDK_ROOT/ndk/<version>)}"
EXTRA_ARGS=()
""",
    "ios": """\
# iOS: this build runs on macOS only, with Xcode and its command line tools.
if [ "$(uname -s)" != "Darwin" ]; then
  echo "error: the iOS runtime must be built on macOS with Xcode" >&2
  exit 1
fi
EXTRA_ARGS=()
""",
    "linux-arm": """\
# Raspberry Pi (aarch64 Linux). Default: build natively on the Pi itself or on an aarch64 machine
# or CI runner (needs git, python3, cmake >= 3.28, gcc/g++; several hours on a Pi 4, 4 GB RAM at least).
# Alternative: cross-compile on x86_64 with EDGEPACK_CROSS=1 (needs gcc-aarch64-linux-gnu and
# g++-aarch64-linux-gnu; give a host protoc of the protobuf version in cmake/deps.txt as PROTOC if
# the build cannot run the target's protoc). The native build is the tested path.
EXTRA_ARGS=()
if [ "$(uname -m)" != "aarch64" ]; then
  if [ "${EDGEPACK_CROSS:-0}" != "1" ]; then
    echo "error: not on aarch64; run this on the Pi (or an aarch64 runner), or set EDGEPACK_CROSS=1 to cross-compile" >&2
    exit 1
  fi
  TOOLCHAIN="$PWD/aarch64-linux-gnu.toolchain.cmake"
  cat > "$TOOLCHAIN" <<'CMAKE'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
CMAKE
  EXTRA_ARGS+=(--cmake_extra_defines "CMAKE_TOOLCHAIN_FILE=$TOOLCHAIN")
  if [ -n "${PROTOC:-}" ]; then
    EXTRA_ARGS+=(--path_to_protoc_exe "$PROTOC")
  fi
fi
""",
}


def build_script(
    profile: TargetProfile,
    *,
    config_name: str = CONFIG_NAME,
    ort_version: str,
    uses_ml_ops: bool,
    type_reduction: bool = True,
) -> str:
    """``build_runtime.sh`` for the bundle: clone onnxruntime ``v<ort_version>`` and run the minimal build.

    The script lives next to the config in the bundle and finds it from its own location; it
    clones into ``$ORT_SRC`` (default ``./onnxruntime``, relative to where it is run).
    """
    require_safe_for_scripts(profile)
    cmd = build_command(
        profile,
        config_name=f"$BUNDLE_DIR/{config_name}",
        ort_version=ort_version,
        uses_ml_ops=uses_ml_ops,
        type_reduction=type_reduction,
    )
    check = _PLATFORM_CHECKS.get(profile.family)
    if check is None:
        msg = f"reduce: no runtime build recipe for family '{profile.family}'; choose one of: {', '.join(_PLATFORM_CHECKS)}"
        raise StageError(msg)
    kind = "--minimal_build extended" if profile.minimal_build_level == "extended" else "--minimal_build"
    fb = _FLATBUFFERS_CHECK if type_reduction else ""
    ml = "keeps ai.onnx.ml operators (the model uses them)" if uses_ml_ops else "drops ai.onnx.ml operators"
    return f"""#!/usr/bin/env bash
# Build a minimal ONNX Runtime for target '{profile.name}' ({kind}).
# Generated by edgepack. The .ort model(s) in this bundle were written by onnxruntime {ort_version};
# ORT format models are tied to the version that wrote them (onnxruntime#8044), so the source is
# pinned to tag v{ort_version}. Only the operators (and types) in {config_name} are built; this
# build {ml}.
set -euo pipefail

ORT_VERSION="{ort_version}"
BUNDLE_DIR="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
ORT_SRC="${{ORT_SRC:-onnxruntime}}"

{check}{fb}
if [ ! -d "$ORT_SRC/.git" ]; then
  git clone --depth 1 --branch "v$ORT_VERSION" --recursive --shallow-submodules \\
    https://github.com/microsoft/onnxruntime.git "$ORT_SRC"
fi
if [ "$(cat "$ORT_SRC/VERSION_NUMBER")" != "$ORT_VERSION" ]; then
  echo "error: $ORT_SRC is not onnxruntime $ORT_VERSION; the .ort files need exactly this version" >&2
  exit 1
fi

cd "$ORT_SRC"
{_render(cmd)}

echo "built: $ORT_SRC/{BUILD_DIR}/"{shlex.quote(_config_of(profile))}
"""


def _config_of(profile: TargetProfile) -> str:
    flags = list(profile.minimal_build_flags)
    return flags[flags.index("--config") + 1] if "--config" in flags[:-1] else "Debug"


# --------------------------------------------------------------------------------------------- CI

_RUNNERS = {"android": "ubuntu-latest", "ios": "macos-14", "linux-arm": "ubuntu-24.04-arm"}
_ANDROID_NDK = "27.2.12479018"  # NDK r27c, installed with the runner's own sdkmanager

_ANDROID_STEPS = """\
      - name: Android NDK
        run: |
          "$ANDROID_SDK_ROOT/cmdline-tools/latest/bin/sdkmanager" --install "ndk;@NDK@"
          echo "ANDROID_NDK_HOME=$ANDROID_SDK_ROOT/ndk/@NDK@" >> "$GITHUB_ENV"
"""

_WORKFLOW = """\
# Build the minimal ONNX Runtime @VERSION@ for the edgepack target @TARGET@.
# Copy this file to .github/workflows/ in the repository that holds the bundle; run it from the
# Actions tab and give the bundle's folder (the one with build_runtime.sh).
name: "onnxruntime @VERSION@ for @TARGET@"

on:
  workflow_dispatch:
    inputs:
      bundle:
        description: "Folder of the edgepack bundle (holds build_runtime.sh and @CONFIG@)"
        required: true
        default: "@TARGET@"

jobs:
  build:
    runs-on: @RUNNER@
    timeout-minutes: 300
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Build tools
        run: python -m pip install "cmake>=3.28" ninja flatbuffers
@EXTRA@      - name: "Build onnxruntime @VERSION@"
        run: bash "$BUNDLE/build_runtime.sh"
        env:
          ORT_SRC: onnxruntime
          BUNDLE: ${{ inputs.bundle }}
      - uses: actions/upload-artifact@v4
        with:
          name: "onnxruntime-@VERSION@-@TARGET@"
          if-no-files-found: error
          path: |
@PATHS@
            onnxruntime/include/onnxruntime/core/session/*.h
            ${{ inputs.bundle }}/@CONFIG@
"""


def ci_workflow(profile: TargetProfile, ort_version: str, *, config_name: str = CONFIG_NAME) -> str:
    """A GitHub Actions workflow that runs the bundle's ``build_runtime.sh`` and uploads the library."""
    _check_buildable(profile, ort_version)
    require_safe_for_scripts(profile)  # the name and --config reach the YAML (quoted) and the paths below
    runner = _RUNNERS.get(profile.family)
    if runner is None:
        msg = f"reduce: no CI runner for family '{profile.family}'; choose one of: {', '.join(_RUNNERS)}"
        raise StageError(msg)
    out = f"onnxruntime/{BUILD_DIR}/{_config_of(profile)}"
    if profile.family == "ios":
        paths = [f"{out}/**/libonnxruntime*.a", f"{out}/**/*.framework/**"]
    else:
        paths = [f"{out}/libonnxruntime.so*"]
    extra = _ANDROID_STEPS.replace("@NDK@", _ANDROID_NDK) if profile.family == "android" else ""
    text = _WORKFLOW.replace("@EXTRA@", extra).replace("@PATHS@", "\n".join(f"            {p}" for p in paths))
    for key, value in (("@VERSION@", ort_version), ("@TARGET@", profile.name), ("@RUNNER@", runner), ("@CONFIG@", config_name)):
        text = text.replace(key, json.dumps(value)[1:-1])  # inside "...": JSON escapes are YAML escapes
    return text


# ------------------------------------------------------------------------------------- the stage


def reduce_stage(ctx, decisions: list[str]):
    """The operator config from the final .ort of every model, the build script and its CI workflow."""
    import onnxruntime

    profile = ctx.target
    bundle = ctx.work / "bundle"
    ort_files = [m.artifact for m in ctx.models]
    config_inputs = ort_files + [e for m in ctx.models for e in m.artifact_extra if e.suffix == ".ort"]
    config = bundle / CONFIG_NAME
    described = operator_config(config_inputs, config, type_reduction=True)
    version = onnxruntime.__version__
    uses_ml = described["uses_ml_ops"]
    script = bundle / "build_runtime.sh"
    script.write_text(build_script(profile, ort_version=version, uses_ml_ops=uses_ml), encoding="utf-8", newline="\n")
    script.chmod(0o755)
    workflow = bundle / "ci" / "build-runtime.yml"
    workflow.parent.mkdir(exist_ok=True)
    workflow.write_text(ci_workflow(profile, version), encoding="utf-8", newline="\n")
    files = {CONFIG_NAME: config, "build_runtime.sh": script, "ci/build-runtime.yml": workflow}
    if profile.family == "linux-arm" and profile.stock_package:
        req = bundle / "requirements.txt"
        req.write_text(f"# the stock aarch64 wheel; it must match the onnxruntime that wrote the .ort files\n"
                       f"{profile.stock_package}=={version}\n", encoding="utf-8", newline="\n")
        files["requirements.txt"] = req
    command = build_command(profile, ort_version=version, uses_ml_ops=uses_ml)
    decisions.append(f"operator config: {described['op_count']} ops from {len(ort_files)} model(s)"
                     + (" (keeps ai.onnx.ml ops: no --disable_ml_ops)" if uses_ml else ""))
    decisions.append(f"minimal build pinned to onnxruntime {version}, the version that wrote the .ort files")
    info = {"config": CONFIG_NAME, "ops": described["ops"], "op_count": described["op_count"],
            "uses_ml_ops": uses_ml, "onnxruntime_version": version, "build_command": command,
            "build_script": "build_runtime.sh", "ci_workflow": "ci/build-runtime.yml"}
    from dataclasses import replace as _replace

    return _replace(ctx.add_files(files), reduce=info)
