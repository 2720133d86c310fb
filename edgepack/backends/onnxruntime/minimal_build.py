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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import StageError
from ...profile_checks import require_safe_for_scripts
from ..base import Packaging
from . import mobile_packaging as mp
from .platforms import PLATFORMS
from . import tools as _ort_tools

if TYPE_CHECKING:
    from ...target import TargetProfile

CONFIG_NAME = "required_operators_and_types.config"
ML_DOMAIN = "ai.onnx.ml"
BUILD_DIR = "build/edgepack"
_RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
_WHEEL_ARCH = {"arm64": "aarch64", "x86_64": "x86_64"}  # a profile's isa.arch, as wheel platform tags name it


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
    settings: str | None = None,
) -> list[str]:
    """The command (run in an onnxruntime checkout) that builds ``profile``'s minimal runtime.

    Android and iOS: onnxruntime's packaging script (an AAR; pods) with the bundle's build-settings
    file (``settings``, default its bundle-relative name; see :mod:`.mobile_packaging`). Otherwise
    ``./build.sh``:

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
    kind = packaging_of(profile)
    if kind is not None:  # a mobile app links a package: onnxruntime's own packaging script builds it
        make = mp.aar_command if kind == "aar" else mp.pods_command
        return make(profile, config_name=config_name, settings=settings or mp.settings_file(kind), build_dir=BUILD_DIR)
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
    """Quote for bash; only our own ``$ANDROID_SDK_ROOT``, ``$ANDROID_NDK_HOME``, ``$SETTINGS`` and
    ``$BUNDLE_DIR/...`` stay expandable (in double quotes): every profile flag is single-quoted as needed by shlex."""
    if re.match(r"^\$(ANDROID_SDK_ROOT|ANDROID_NDK_HOME|BUNDLE_DIR|SETTINGS)(/[A-Za-z0-9_./-]*)?$", arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def _render(cmd: list[str], extra: bool = True) -> str:
    """One ``--flag value...`` group per line, joined with backslashes (then the script's EXTRA_ARGS for build.sh)."""
    groups: list[list[str]] = [[cmd[0]]]
    for arg in cmd[1:]:
        if arg.startswith("--"):
            groups.append([arg])
        else:
            groups[-1].append(arg)
    lines = [" ".join(_shell_arg(a) for a in g) for g in groups]
    if not extra:
        return " \\\n  ".join(lines)
    return " \\\n  ".join(lines) + ' \\\n  ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}'


_FLATBUFFERS_CHECK = """
# --enable_reduced_operator_type_support reads the per-op types with the flatbuffers package.
if ! python3 -c "import flatbuffers" 2>/dev/null; then
  echo "error: the reduced-types build needs the python package 'flatbuffers' (python3 -m pip install flatbuffers)" >&2
  exit 1
fi
"""



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
    packaging = packaging_of(profile)
    cmd = build_command(
        profile,
        config_name=f"$BUNDLE_DIR/{config_name}",
        ort_version=ort_version,
        uses_ml_ops=uses_ml_ops,
        type_reduction=type_reduction,
        settings="$SETTINGS",
    )
    platform = PLATFORMS.get(profile.family)
    if platform is None:
        msg = f"reduce: no runtime build recipe for family '{profile.family}'; choose one of: {', '.join(PLATFORMS)}"
        raise StageError(msg)
    check = platform.check
    kind = "--minimal_build extended" if profile.minimal_build_level == "extended" else "--minimal_build"
    fb = _FLATBUFFERS_CHECK if type_reduction else ""
    ml = "keeps ai.onnx.ml operators (the model uses them)" if uses_ml_ops else "drops ai.onnx.ml operators"
    what = {"aar": f"an Android AAR ({mp.AAR_NAME}) with onnxruntime's {mp.AAR_SCRIPT}",
            "pods": f"the onnxruntime-c and onnxruntime-objc pods with onnxruntime's {mp.PODS_SCRIPT}"}.get(
        packaging or "", "the shared library with build.sh")
    settings = "" if packaging is None else mp.settings_lines(packaging, BUILD_DIR)
    if packaging is None:
        after = f'\necho "built: $ORT_SRC/{BUILD_DIR}/"{shlex.quote(_config_of(profile))}\n'
    else:
        after = mp.after_lines(packaging, BUILD_DIR, mp.build_config(profile))
    return f"""#!/usr/bin/env bash
# Build a minimal ONNX Runtime for target '{profile.name}' ({kind}): {what}.
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
{settings}
cd "$ORT_SRC"
{_render(cmd, extra=packaging is None)}
{after}"""


def packaging_of(profile: TargetProfile) -> str | None:
    """'aar' / 'pods' when the profile's family links a package built by onnxruntime's packaging script."""
    platform = PLATFORMS.get(profile.family)
    return platform.packaging if platform else None


def _config_of(profile: TargetProfile) -> str:
    flags = list(profile.minimal_build_flags)
    return flags[flags.index("--config") + 1] if "--config" in flags[:-1] else "Debug"


# --------------------------------------------------------------------------------------------- CI

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
      - uses: actions/checkout@v5
      - uses: actions/setup-python@v6
        with:
          python-version: "3.12"
      - name: Build tools
        run: python -m pip install "cmake>=3.28" ninja flatbuffers
@EXTRA@      - name: "Build onnxruntime @VERSION@"
        run: bash "$BUNDLE/build_runtime.sh"
        env:
          ORT_SRC: onnxruntime
          BUNDLE: ${{ inputs.bundle }}
      - uses: actions/upload-artifact@v6
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
    runner = profile.ci_runner
    if runner is None:
        msg = (f"reduce: target '{profile.name}' names no CI runner for ci/build-runtime.yml: set "
               "minimal_build.ci_runner (a GitHub Actions runner label, e.g. 'ubuntu-latest')")
        raise StageError(msg)
    platform = PLATFORMS.get(profile.family)
    if platform is None:
        msg = f"reduce: no runtime build recipe for family '{profile.family}'; choose one of: {', '.join(PLATFORMS)}"
        raise StageError(msg)
    if platform.packaging is not None:
        paths = [f"onnxruntime/{BUILD_DIR}/{item}" for item in platform.uploads]
    else:
        out = f"onnxruntime/{BUILD_DIR}/{_config_of(profile)}"
        paths = [f"{out}/{lib}" for lib in platform.libraries]
    text = _WORKFLOW.replace("@EXTRA@", platform.ci_steps).replace("@PATHS@", "\n".join(f"            {p}" for p in paths))
    for key, value in (("@VERSION@", ort_version), ("@TARGET@", profile.name), ("@RUNNER@", runner), ("@CONFIG@", config_name)):
        text = text.replace(key, json.dumps(value)[1:-1])  # inside "...": JSON escapes are YAML escapes
    return text


# ------------------------------------------------------------------------------------- packaging


@dataclass(frozen=True)
class MinimalBuild(Packaging):
    """The bundle's operator config and the pinned minimal-runtime build (manifest ``reduced_build``)."""

    config: str
    ops: dict[str, list[str]]
    op_count: int
    uses_ml_ops: bool
    onnxruntime_version: str
    build_command: tuple[str, ...]
    build_script: str = "build_runtime.sh"
    ci_workflow: str = "ci/build-runtime.yml"
    packaging: str | None = None  # "aar" / "pods" (onnxruntime's packaging scripts), None: build.sh
    build_settings: str | None = None  # the settings file the packaging script reads (bundle-relative)

    def produces(self) -> str:
        return {"aar": f"{mp.AAR_NAME} (Android archive: libonnxruntime.so, the JNI library and the Java API)",
                "pods": "the onnxruntime-c and onnxruntime-objc pods (xcframework: iphoneos, iphonesimulator, "
                        "macosx) and the C pod as a Swift package archive"}.get(self.packaging or "",
                                                                               "libonnxruntime.so (shared library)")

    def to_json(self) -> dict[str, Any]:
        out = {"config": self.config, "ops": self.ops, "op_count": self.op_count, "uses_ml_ops": self.uses_ml_ops,
               "onnxruntime_version": self.onnxruntime_version, "build_command": list(self.build_command),
               "build_script": self.build_script, "ci_workflow": self.ci_workflow, "produces": self.produces()}
        if self.packaging is not None:
            out["build_settings"] = self.build_settings
        return out

    def summary(self) -> str:
        return (f"operator config: {self.op_count} ops; runtime recipe: {self.build_script} "
                f"(onnxruntime {self.onnxruntime_version}) builds {self.produces().split(' (')[0]}")


def package(ctx, decisions: list[str]) -> tuple[dict[str, Path], MinimalBuild]:
    """The operator config from the final .ort of every model, the build script and its CI workflow."""
    import onnxruntime

    profile = ctx.target
    bundle = ctx.work / "bundle"
    ort_files = [m.artifact for m in ctx.models]
    config_inputs = ort_files + [e for m in ctx.models for e in m.analysis_only if e.suffix == ".ort"]
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
    if profile.stock_index == "pypi" and profile.stock_package:
        req = bundle / "requirements.txt"
        req.write_text(f"# the stock {_WHEEL_ARCH[profile.arch]} wheel; it must match the onnxruntime that wrote the "
                       f".ort files\n{profile.stock_package}=={version}\n", encoding="utf-8", newline="\n")
        files["requirements.txt"] = req
    packaging = packaging_of(profile)
    settings = None
    if packaging is not None:
        settings = mp.settings_file(packaging)
        dst = bundle / settings
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(mp.settings_json(mp.settings_doc(profile, packaging, uses_ml_ops=uses_ml)), encoding="utf-8",
                       newline="\n")
        files[settings] = dst
    command = build_command(profile, ort_version=version, uses_ml_ops=uses_ml)
    decisions.append(f"operator config: {described['op_count']} ops from {len(ort_files)} model(s)"
                     + (" (keeps ai.onnx.ml ops: no --disable_ml_ops)" if uses_ml else ""))
    decisions.append(f"minimal build pinned to onnxruntime {version}, the version that wrote the .ort files")
    return files, MinimalBuild(CONFIG_NAME, described["ops"], described["op_count"], uses_ml, version, tuple(command),
                               packaging=packaging, build_settings=settings)
