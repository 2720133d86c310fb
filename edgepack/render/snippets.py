"""Complete, minimal code that runs one input of a bundle on its platform (Kotlin, Swift, Python),
for the bundle READMEs. The input is the bundle's reference input (``reference/``), so each snippet
runs as it stands; names from the model reach the code as escaped string literals."""

from __future__ import annotations

import json

import numpy as np

_KOTLIN_BUFFER = {"float32": ("asFloatBuffer()", None), "int64": ("asLongBuffer()", None), "int32": ("asIntBuffer()", None),
                  "uint8": (None, "OnnxJavaType.UINT8"), "int8": (None, "OnnxJavaType.INT8"), "bool": (None, "OnnxJavaType.BOOL")}
_SWIFT_TYPE = {"float32": ".float", "int64": ".int64", "int32": ".int32", "uint8": ".uInt8", "int8": ".int8",
               "uint32": ".uInt32", "uint64": ".uInt64", "float16": ".float16"}


def py_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a Python string literal


def kotlin_str(text: str) -> str:
    return json.dumps(text).replace("$", "\\$")  # \uXXXX escapes are Kotlin's; $ would start a template


def swift_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _np_dtype(dtype: str) -> str:
    return np.dtype(dtype).newbyteorder("<").str


def python(artifact: str, entry: dict, session_config: dict[str, str]) -> str:
    """onnxruntime on a Linux host (the Pi): the reference input in, every output's shape out."""
    lines = ["import numpy as np, onnxruntime as ort", "", "options = ort.SessionOptions()"]
    lines += [f"options.add_session_config_entry({py_str(k)}, {py_str(v)})" for k, v in sorted(session_config.items())]
    lines += ["options.intra_op_num_threads = 4  # the Pi's four cores",
              f"session = ort.InferenceSession({py_str(artifact)}, options, providers=[\"CPUExecutionProvider\"])",
              "feed = {  # one input: the bundle's reference input"]
    for t in entry["inputs"]:
        lines.append(f"    {py_str(t['name'])}: np.fromfile({py_str(t['file'])}, dtype={py_str(_np_dtype(t['dtype']))})"
                     f".reshape({t['shape']}),")
    lines += ["}", "outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))",
              "for name, value in outputs.items():",
              "    print(name, value.shape, \"argmax:\", value.argmax(-1) if value.ndim == 2 else \"-\")"]
    return "\n".join(lines)


def openvino(xml: str, entry: dict) -> str:
    """OpenVINO with the bundle's runtime_config.json: the reference input in, every output's shape out."""
    lines = ["import json, numpy as np, openvino as ov", "",
             'config = json.load(open("runtime_config.json"))  # device, PERFORMANCE_HINT, precision, threads',
             f"compiled = ov.Core().compile_model({py_str(xml)}, config[\"device\"], config[\"properties\"])",
             "feed = {  # one input: the bundle's reference input"]
    for t in entry["inputs"]:
        lines.append(f"    {py_str(t['name'])}: np.fromfile({py_str(t['file'])}, dtype={py_str(_np_dtype(t['dtype']))})"
                     f".reshape({t['shape']}),")
    lines += ["}", "result = compiled(feed)", "for output in compiled.outputs:",
              "    value = result[output]",
              "    print(output.get_any_name(), value.shape, \"argmax:\", value.argmax(-1) if value.ndim == 2 else \"-\")"]
    return "\n".join(lines)


def kotlin(artifact: str, entry: dict, session_config: dict[str, str], nnapi_flags: list[str], outputs_float: bool) -> str:
    """Android: the model loaded by path from the app's files, NNAPI as the manifest says, the reference input in."""
    flags = ("EnumSet.of(" + ", ".join(f"NNAPIFlags.{f}" for f in nnapi_flags) + ")") if nnapi_flags else \
        "EnumSet.noneOf(NNAPIFlags::class.java)"
    lines = ["import ai.onnxruntime.OnnxJavaType", "import ai.onnxruntime.OnnxTensor", "import ai.onnxruntime.OrtEnvironment",
             "import ai.onnxruntime.OrtSession", "import ai.onnxruntime.providers.NNAPIFlags", "import android.content.Context",
             "import java.io.File", "import java.nio.ByteBuffer", "import java.nio.ByteOrder", "import java.util.EnumSet", "",
             "// the bundle folder in app/src/main/assets/bundle/ (build.gradle.kts: androidResources { noCompress += \"ort\" })",
             "fun runOnce(context: Context): Map<String, Any> {",
             "    val env = OrtEnvironment.getEnvironment()",
             f"    val model = File(context.filesDir, {kotlin_str(artifact)})  // loaded by path, copied out of the APK once",
             f"    if (!model.exists()) context.assets.open({kotlin_str('bundle/' + artifact)}).use {{ i -> model.outputStream().use {{ i.copyTo(it) }} }}",
             "    val options = OrtSession.SessionOptions().apply {"]
    lines += [f"        addConfigEntry({kotlin_str(k)}, {kotlin_str(v)})" for k, v in sorted(session_config.items())]
    lines += ["        setIntraOpNumThreads(4)",
              f"        addNnapi({flags})  // runtime.provider_options",
              "    }",
              "    fun tensor(file: String, shape: LongArray, type: OnnxJavaType?): OnnxTensor {",
              "        val bytes = context.assets.open(\"bundle/$file\").use { it.readBytes() }",
              "        val buffer = ByteBuffer.allocateDirect(bytes.size).order(ByteOrder.LITTLE_ENDIAN).put(bytes).rewind() as ByteBuffer",
              "        return when (type) {",
              "            null -> OnnxTensor.createTensor(env, buffer.asFloatBuffer(), shape)",
              "            else -> OnnxTensor.createTensor(env, buffer, shape, type)",
              "        }",
              "    }",
              "    val feed = mapOf(  // one input: the bundle's reference input"]
    for t in entry["inputs"]:
        view, java_type = _KOTLIN_BUFFER.get(t["dtype"], (None, "OnnxJavaType.UNKNOWN"))
        shape = "longArrayOf(" + ", ".join(str(d) for d in t["shape"]) + ")"
        if view == "asFloatBuffer()":
            lines.append(f"        {kotlin_str(t['name'])} to tensor({kotlin_str(t['file'])}, {shape}, null),")
        elif view is not None:
            lines.append(f"        {kotlin_str(t['name'])} to OnnxTensor.createTensor(env, ByteBuffer.wrap(context.assets.open("
                         f"{kotlin_str('bundle/' + t['file'])}).use {{ it.readBytes() }}).order(ByteOrder.LITTLE_ENDIAN).{view}, {shape}),")
        else:
            lines.append(f"        {kotlin_str(t['name'])} to tensor({kotlin_str(t['file'])}, {shape}, {java_type}),")
    value = "(value as OnnxTensor).floatBuffer.let { b -> FloatArray(b.remaining()).also { b.get(it) } }" if outputs_float \
        else "value.value"
    lines += ["    )",
              "    return env.createSession(model.path, options).use { session ->",
              f"        session.run(feed).use {{ result -> result.associate {{ (name, value) -> name to {value} }} }}",
              "    }", "}"]
    return "\n".join(lines)


def swift(artifact: str, entry: dict, session_config: dict[str, str], coreml_options: dict[str, str]) -> str:
    """iOS: the .ort by path from the bundle folder, Core ML with a model cache, the reference input in."""
    opts = dict(coreml_options)
    options = ", ".join(f"{swift_str(k)}: {swift_str(v)}" for k, v in sorted(opts.items()))
    lines = ["import Foundation", "import OnnxRuntimeBindings  // CocoaPods: import onnxruntime_objc", "",
             "// the bundle folder added to the app target as a folder reference named \"bundle\"",
             "func runOnce() throws -> [String: ORTValue] {",
             "    let dir = Bundle.main.url(forResource: \"bundle\", withExtension: nil)!",
             "    let env = try ORTEnv(loggingLevel: .warning)",
             "    let options = try ORTSessionOptions()"]
    lines += [f"    try options.addConfigEntry(withKey: {swift_str(k)}, value: {swift_str(v)})"
              for k, v in sorted(session_config.items())]
    lines += ["    try options.setIntraOpNumThreads(2)",
              "    let cache = FileManager.default.urls(for: .cachesDirectory, in: .userDomainMask)[0]  // the ML Program is compiled once",
              f"    try options.appendCoreMLExecutionProvider(withOptionsV2: [{options}, \"ModelCacheDirectory\": cache.path])",
              f"    let session = try ORTSession(env: env, modelPath: dir.appendingPathComponent({swift_str(artifact)}).path,",
              "                                 sessionOptions: options)",
              "    func tensor(_ file: String, _ type: ORTTensorElementDataType, _ shape: [NSNumber]) throws -> ORTValue {",
              "        try ORTValue(tensorData: NSMutableData(data: try Data(contentsOf: dir.appendingPathComponent(file))),",
              "                     elementType: type, shape: shape)",
              "    }",
              "    let feed = [  // one input: the bundle's reference input"]
    for t in entry["inputs"]:
        lines.append(f"        {swift_str(t['name'])}: try tensor({swift_str(t['file'])}, {_SWIFT_TYPE.get(t['dtype'], '.undefined')}, "
                     f"{list(t['shape'])}),")
    lines += ["    ]",
              "    return try session.run(withInputs: feed, outputNames: Set(try session.outputNames()), runOptions: nil)",
              "}"]
    return "\n".join(lines)
