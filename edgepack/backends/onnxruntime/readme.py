"""The README.md of an ONNX Runtime bundle: what goes in and comes out, a complete snippet that runs
one input on the device, and how to build the minimal runtime (an AAR, pods, or a shared library)."""

from __future__ import annotations

from ...render import snippets
from ...render.readme import FOOTER, header_lines, output_lines, preprocessing_lines, reference_lines, snippet_fields
from .mobile_packaging import podfile_lines


def _nnapi_flags(options: dict) -> list[str]:
    return [k.removeprefix("NNAPI_FLAG_") for k, v in sorted(options.items())
            if v is True or str(v).lower() in ("1", "true")]


def _load_section(ctx, runtime: dict, fields: dict) -> list[str]:
    p = ctx.target
    m = fields["model"]
    entry = fields["entry"]
    artifact = m.artifact.name
    ort = ctx.package.onnxruntime_version if ctx.package else ""
    config = runtime.get("session_config", {})
    if p.family == "android":
        floats = all(t.dtype == "float32" for t in m.source.info.outputs)
        code = snippets.kotlin(artifact, entry, config, _nnapi_flags(p.provider_options), floats)
        return ["## Run it on Android", "",
                f"Dependency: `com.microsoft.onnxruntime:onnxruntime-android:{ort}`, or the reduced AAR `build_runtime.sh`"
                " builds (`onnxruntime-release.aar` in `app/libs/`). Copy this folder to `app/src/main/assets/bundle/`; "
                "this runs the reference input once (make the session once and keep it):", "",
                "```kotlin", code, "```", ""]
    if p.family == "ios":
        options = {k: ("1" if v is True else "0" if v is False else str(v)) for k, v in p.provider_options.items()}
        code = snippets.swift(artifact, entry, config, options)
        return ["## Run it on iOS", "",
                f"Dependency: pod `onnxruntime-objc` {ort} (`platform :ios, '15.1'`) or the Swift package at {ort}, or "
                "the reduced pods `build_runtime.sh` builds. Add this folder to the app target as a folder reference "
                "named `bundle`; this runs the reference input once (make the session once and keep it):", "",
                "```swift", code, "```", ""]
    code = snippets.python(artifact, entry, config)
    return ["## Run it on the Raspberry Pi", "", "```bash", "python3 -m venv venv && . venv/bin/activate",
            f"pip install -r requirements.txt        # the stock aarch64 onnxruntime {ort}, the version that wrote the .ort",
            "```", "", "In this folder, this runs the reference input once:", "", "```python", code, "```", ""]


def _runtime_section(ctx) -> list[str]:
    ort = ctx.package.onnxruntime_version if ctx.package else ""
    packaging = getattr(ctx.package, "packaging", None)
    lines = ["## Build the minimal runtime", ""]
    if packaging == "aar":
        lines += [f"`build_runtime.sh` (Linux or macOS, Android SDK + NDK, JDK 17) builds ONNX Runtime {ort} as an "
                  "Android archive with only the operators and types in `required_operators_and_types.config`: it runs "
                  "onnxruntime's `tools/ci_build/github/android/build_aar_package.py` with "
                  "`runtime/android_aar_build_settings.json` (`--build_java`, so the JNI library and Java API are in it) "
                  "and leaves `onnxruntime/build/edgepack/onnxruntime-release.aar`. In the app:", "",
                  "```kotlin", 'implementation(files("libs/onnxruntime-release.aar"))  // instead of onnxruntime-android',
                  "```", ""]
    elif packaging == "pods":
        lines += [f"`build_runtime.sh` (macOS with Xcode) builds ONNX Runtime {ort} as the `onnxruntime-c` and "
                  "`onnxruntime-objc` pods with only the operators and types in `required_operators_and_types.config`: "
                  "it runs onnxruntime's `tools/ci_build/github/apple/build_and_assemble_apple_pods.py` with "
                  "`runtime/apple_framework_build_settings.json` (`--build_apple_framework --minimal_build=extended "
                  "--use_coreml`; iphoneos, iphonesimulator and macosx slices). In the Podfile:", "",
                  "```ruby", "platform :ios, '15.1'", *podfile_lines("onnxruntime/build/edgepack/pods"), "```", "",
                  "For Swift Package Manager it also writes `pods/pod-archive-onnxruntime-c-<version>.zip`: set "
                  "`ORT_POD_LOCAL_PATH` to it (relative to onnxruntime-swift-package-manager's Package.swift).", ""]
    else:
        lines += [f"`build_runtime.sh` builds ONNX Runtime {ort} (`libonnxruntime.so`) with only the operators and "
                  "types in `required_operators_and_types.config`.", ""]
    lines += ["`ci/build-runtime.yml` is a GitHub Actions workflow that runs it and uploads the result. The runtime "
              "must be the same version that wrote the `.ort` files.", ""]
    return lines


def render(ctx) -> str:
    from . import OnnxRuntimeBackend

    runtime = OnnxRuntimeBackend().runtime_config(ctx)
    fields = snippet_fields(ctx)
    return "\n".join([
        *header_lines(ctx),
        *preprocessing_lines(ctx),
        *output_lines(ctx),
        *_load_section(ctx, runtime, fields),
        *reference_lines(ctx),
        *_runtime_section(ctx),
        *FOOTER,
    ])
