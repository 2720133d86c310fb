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
    platform = PLATFORMS.get(profile.family)
    if platform is None:
        msg = f"reduce: no runtime build recipe for family '{profile.family}'; choose one of: {', '.join(PLATFORMS)}"
        raise StageError(msg)
    check = platform.check
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
    runner = profile.ci_runner
    if runner is None:
        msg = (f"reduce: target '{profile.name}' names no CI runner for ci/build-runtime.yml: set "
               "minimal_build.ci_runner (a GitHub Actions runner label, e.g. 'ubuntu-latest')")
        raise StageError(msg)
    platform = PLATFORMS.get(profile.family)
    if platform is None:
        msg = f"reduce: no runtime build recipe for family '{profile.family}'; choose one of: {', '.join(PLATFORMS)}"
        raise StageError(msg)
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

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "ops": self.ops, "op_count": self.op_count, "uses_ml_ops": self.uses_ml_ops,
                "onnxruntime_version": self.onnxruntime_version, "build_command": list(self.build_command),
                "build_script": self.build_script, "ci_workflow": self.ci_workflow}

    def summary(self) -> str:
        return (f"operator config: {self.op_count} ops; runtime recipe: {self.build_script} "
                f"(onnxruntime {self.onnxruntime_version})")


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
    command = build_command(profile, ort_version=version, uses_ml_ops=uses_ml)
    decisions.append(f"operator config: {described['op_count']} ops from {len(ort_files)} model(s)"
                     + (" (keeps ai.onnx.ml ops: no --disable_ml_ops)" if uses_ml else ""))
    decisions.append(f"minimal build pinned to onnxruntime {version}, the version that wrote the .ort files")
    return files, MinimalBuild(CONFIG_NAME, described["ops"], described["op_count"], uses_ml, version, tuple(command))
