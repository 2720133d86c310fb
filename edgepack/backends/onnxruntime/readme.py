"""The README.md of an ONNX Runtime bundle: loading the .ort on the device, building the minimal runtime."""

from __future__ import annotations

import json

from ...render.readme import FOOTER, header_lines


_ANDROID = """\
## Load it on Android

Put `{artifact}` in `app/src/main/assets/`, then (Kotlin, `com.microsoft.onnxruntime:onnxruntime-android:{ort}`
or the custom AAR that `build_runtime.sh` builds):

```kotlin
val env = OrtEnvironment.getEnvironment()
val options = OrtSession.SessionOptions().apply {{
    addNnapi()                                                        // NNAPI execution provider
    addConfigEntry("session.enable_saved_runtime_optimizations", "1") // replay saved fusions on CPU nodes
}}
val session = env.createSession(context.assets.open("{artifact}").readBytes(), options)
```
"""

_IOS = """\
## Load it on iOS

Add `{artifact}` to the app bundle, then (Swift, pod `onnxruntime-objc` {ort} or the custom build from
`build_runtime.sh`):

```swift
let env = try ORTEnv(loggingLevel: .warning)
let options = try ORTSessionOptions()
try options.addConfigEntry(withKey: "session.enable_saved_runtime_optimizations", value: "1")
try options.appendCoreMLExecutionProvider(withOptionsV2: [{coreml_options}])
let session = try ORTSession(env: env, modelPath: Bundle.main.path(forResource: "{stem}", ofType: "ort")!,
                             sessionOptions: options)
```
"""

_PI = """\
## Load it on the Raspberry Pi

```bash
python3 -m venv venv && . venv/bin/activate
pip install -r requirements.txt        # the stock aarch64 onnxruntime {ort}, the version that wrote the .ort
```

```python
import numpy as np, onnxruntime as ort
session = ort.InferenceSession("{artifact}", providers=["CPUExecutionProvider"])
outputs = session.run(None, {{{first_input}: np.zeros({example_shape}, np.float32)}})
```
"""


def render(ctx) -> str:
    p = ctx.target
    m = ctx.models[0]
    ort = ctx.package.onnxruntime_version if ctx.package else ""
    first = m.source.info.inputs[0]
    shape = m.shapes.get(first.name, first.shape) if m.shapes else first.shape
    example = tuple(d if isinstance(d, int) else 1 for d in (shape or ()))
    fields = {"artifact": m.artifact.name, "stem": m.artifact.stem, "ort": ort, "first_input": json.dumps(first.name),
              "example_shape": example,  # names and options go into code as JSON string literals (quoted, escaped)
              "coreml_options": ", ".join(f'{json.dumps(k)}: {json.dumps(str(v))}' for k, v in sorted(p.provider_options.items()))}
    body = {"android": _ANDROID, "ios": _IOS, "linux-arm": _PI}.get(p.family, "")
    return "\n".join([
        *header_lines(ctx),
        body.format(**fields),
        "## Build the minimal runtime",
        "",
        f"`build_runtime.sh` builds ONNX Runtime {ort} with only the operators and types in",
        "`required_operators_and_types.config`; `ci/build-runtime.yml` is a GitHub Actions workflow that runs it.",
        "The runtime must be the same version that wrote the `.ort` files.",
        "",
        *FOOTER,
    ])
