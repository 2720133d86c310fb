"""The README.md of a QNN bundle: loading the context model on a Snapdragon phone, and the fallbacks."""

from __future__ import annotations

import json

from ...render.readme import FOOTER, header_lines
from . import package


def ort_requirement() -> str:
    """The onnxruntime version range the installed QNN plugin declares (its wheel's Requires-Dist)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("onnxruntime-qnn") or []
    except PackageNotFoundError:
        return "onnxruntime"
    found = next((r.split(";")[0].strip() for r in reqs if r.replace(" ", "").startswith("onnxruntime>")), None)
    return found or "onnxruntime"


def render(ctx) -> str:
    p = ctx.target
    m = ctx.models[0]
    files = package.names(ctx)[m.name]
    cfg = package.runtime_config(ctx)
    plugin = ctx.package.onnxruntime_qnn if ctx.package else "?"
    sdk = ctx.package.qnn_sdk if ctx.package else "?"
    opts = ",\n        ".join(f"{json.dumps(k)} to {json.dumps(v)}" for k, v in cfg["provider_options"].items())
    ort_min = ort_requirement().replace("onnxruntime", "").strip() or "(see onnxruntime-qnn's requirements)"
    return "\n".join([
        *header_lines(ctx, {x.name: package.names(ctx)[x.name]["context"] for x in ctx.models}),
        "## Files",
        "",
        f"- `{files['context']}` + `{files['context_binary']}`: the model compiled for {cfg['soc']}, soc_model "
        f"{cfg['soc_model']}, QNN SDK {sdk}. The phone loads it without compiling the graph. It runs only on that SoC",
        "  and with a QNN runtime that accepts the binary (`ep_compatibility_info` in `manifest.json`).",
        f"- `{files['fallback']}`: the same model before compilation ({m.recipe.name}): for other Snapdragon SoCs (the QNN EP",
        "  compiles it when the session is created, which takes longer) and for NNAPI or the CPU.",
        "- `runtime_config.json`: the QNN provider options and the order to try the models in.",
        "",
        "## Load it on Android (Kotlin)",
        "",
        "```kotlin",
        "// app/build.gradle.kts",
        "android { packaging { jniLibs { useLegacyPackaging = true } } } // the EP loads its libraries from nativeLibraryDir",
        "dependencies {",
        f'    implementation("{package.ORT_PACKAGE}:<version>")   // onnxruntime {ort_min} (what the QNN plugin {plugin} needs)',
        f'    implementation("{package.EP_PACKAGE}:{plugin}")',
        f'    implementation("{package.QNN_RUNTIME_PACKAGE}:<QAIRT version compatible with {sdk}>")',
        "}",
        "```",
        "",
        "```xml",
        "<!-- AndroidManifest.xml, inside <application>: Android 12+ hides the FastRPC library the HTP is reached through -->",
        '<uses-native-library android:name="libcdsprpc.so" android:required="false" />',
        "```",
        "",
        "```kotlin",
        "val env = OrtEnvironment.getEnvironment()",
        "val libs = applicationInfo.nativeLibraryDir",
        f'env.registerExecutionProviderLibrary("{cfg["ep_registration_name"]}", "$libs/{cfg["ep_library"]}")',
        f'val qnn = env.epDevices.filter {{ it.epName == "{cfg["ep_registration_name"]}" }}',
        "val options = OrtSession.SessionOptions().apply {",
        "    addExecutionProvider(qnn, mapOf(",
        f"        {opts}))",
        "}",
        f"// {files['context']} names {files['context_binary']} by file name: copy both from the assets into one folder",
        f'val session = env.createSession(File(filesDir, "{files["context"]}").path, options)',
        "```",
        "",
        f"If the session cannot be created (another SoC, an incompatible QNN runtime), open `{files['fallback']}` the same way",
        "(the QNN EP compiles it on the device), then with NNAPI (`addNnapi()`), then on the CPU. `sample_apps/android` does",
        "this from `manifest.json`.",
        "",
        "## What was checked here, and what was not",
        "",
        "The shipped context model was checked against the fp32 original (`manifest.json` → `verification`) with",
        f"{m.conversion.verified_on if m.conversion else 'the QNN HTP backend of the build host'}. Timings of that run are not phone latencies; the",
        "latency and energy in `manifest.json` → `estimates` are estimates from the profile's device figures.",
        "Not checked here (no phone, no Maven access): that the phone's QNN runtime loads this context binary, and the",
        "Maven versions of the three packages above beyond what `manifest.json` → `reduced_build.android` says.",
        "",
        *FOOTER,
    ])
