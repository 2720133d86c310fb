package dev.edgepack.sample

import org.json.JSONArray
import org.json.JSONObject

/** The fields of an edgepack bundle's manifest.json this app uses (schemas/manifest.schema.json, schema_version 1). */
data class BundleManifest(
    val targetName: String,
    val executionProvider: String,
    /** runtime.provider_options as written: NNAPI_FLAG_* -> true/false for NNAPI targets. */
    val providerOptions: Map<String, Any>,
    /** runtime.session_config: SessionOptions.addConfigEntry(key, value) entries. */
    val sessionConfig: Map<String, String>,
    /** toolchain.onnxruntime: the version that wrote model.ort; the app's runtime must match it. */
    val onnxruntimeVersion: String,
    val model: ModelEntry,
    /** QNN bundles (runtime.execution_provider "QNN"): the plugin EP and this model's files; null otherwise. */
    val qnn: QnnFiles? = null,
)

/**
 * A QNN bundle's model: [context] (EPContext model) + [contextBinary] compiled for one SoC ([soc]), and
 * [fallback] (the model they came from) for other SoCs, NNAPI or the CPU (runtime.models.<name>);
 * [fallbackOrder] is runtime.fallback_order: the sessions to try, in turn (see [FallbackStep]).
 */
data class QnnFiles(
    val epLibrary: String,
    val registrationName: String,
    val context: String,
    val contextBinary: String,
    val fallback: String,
    val fallbackOrder: List<String>,
    val soc: String,
)

data class ModelEntry(
    val name: String,
    val artifact: String,
    val recipe: String,
    val inputs: List<TensorSpec>,
    /** models[].outputs: name, dtype, shape and what each output looks like. */
    val outputs: List<OutputSpec>,
    /** models[].preprocessing: how an image becomes the input (null: the model takes raw tensors). */
    val preprocessing: Preprocessing?,
    /** models[].reference: the input/output pair the first run is checked against (null in old bundles). */
    val reference: ReferencePair?,
)

/** An input of the shipped model; [shape] holds -1 for a dimension the bundle leaves open. */
data class TensorSpec(val name: String, val dtype: String, val shape: LongArray)

data class OutputSpec(val name: String, val dtype: String, val shape: LongArray, val meaning: String)

/** The calibration folder's preprocess.toml, as the manifest records it. */
data class Preprocessing(
    val input: String,
    val height: Int,
    val width: Int,
    val resize: String,
    val padValue: Int,
    val layout: String,
    val color: String,
    val scale: Double,
    val mean: DoubleArray,
    val std: DoubleArray,
)

/** One raw little-endian C-order file of the reference pair (a path inside the bundle). */
data class ReferenceTensor(val name: String, val file: String, val dtype: String, val shape: LongArray)

/** The check: per output, equal within [equalWithin] of max(|ref|, 1), or cosine >= [cosineMin] (and the same top-1). */
data class ReferencePair(
    val inputs: List<ReferenceTensor>,
    val outputs: List<ReferenceTensor>,
    val equalWithin: Double,
    val cosineMin: Double,
    val sameTop1: Boolean,
)

object ManifestReader {
    private const val SCHEMA_VERSION = 1

    /** Parses manifest.json text; [modelName] picks a model of a multi-model bundle. */
    fun parse(text: String, modelName: String? = null): BundleManifest {
        val root = JSONObject(text)
        val version = root.getInt("schema_version")
        require(version == SCHEMA_VERSION) { "manifest schema_version $version; this app reads $SCHEMA_VERSION" }
        val target = root.getJSONObject("target")
        val runtime = root.getJSONObject("runtime")
        val model = pickModel(root.getJSONArray("models"), modelName)
        return BundleManifest(
            targetName = target.getString("name"),
            executionProvider = runtime.getString("execution_provider"),
            providerOptions = toMap(runtime.optJSONObject("provider_options")),
            sessionConfig = toMap(runtime.optJSONObject("session_config")).mapValues { it.value.toString() },
            onnxruntimeVersion = root.getJSONObject("toolchain").getString("onnxruntime"),
            model = model,
            qnn = qnnFiles(runtime, model.name),
        )
    }

    /** runtime.ep_library, ep_registration_name, models.<name>, fallback_order and soc of a QNN bundle. */
    private fun qnnFiles(runtime: JSONObject, modelName: String): QnnFiles? {
        if (runtime.getString("execution_provider") != "QNN") return null
        val files = runtime.getJSONObject("models").getJSONObject(modelName)
        val order = runtime.optJSONArray("fallback_order") ?: JSONArray()
        return QnnFiles(
            epLibrary = runtime.getString("ep_library"),
            registrationName = runtime.getString("ep_registration_name"),
            context = files.getString("context"),
            contextBinary = files.getString("context_binary"),
            fallback = files.getString("fallback"),
            fallbackOrder = (0 until order.length()).map { order.getString(it) },
            soc = runtime.optString("soc", "the SoC it was compiled for"),
        )
    }

    private fun pickModel(models: JSONArray, modelName: String?): ModelEntry {
        val entries = (0 until models.length()).map { models.getJSONObject(it) }
        val names = entries.map { it.getString("name") }
        val entry = when {
            modelName != null -> entries.firstOrNull { it.getString("name") == modelName }
                ?: throw IllegalArgumentException("no model '$modelName' in the bundle; models: $names")
            entries.size == 1 -> entries[0]
            else -> throw IllegalArgumentException("the bundle holds ${entries.size} models ($names); pass one's name")
        }
        val declared = entry.getJSONObject("source_model").getJSONArray("inputs")
        val fixed = entry.optJSONObject("shipped_inputs") // fixed shapes: {input name: [dims]}; else a list of inputs
        val inputs = (0 until declared.length()).map { i ->
            val t = declared.getJSONObject(i)
            val name = t.getString("name")
            val dims = fixed?.optJSONArray(name) ?: t.optJSONArray("shape") ?: JSONArray()
            TensorSpec(name, t.getString("dtype"), dims(dims))
        }
        val outputs = entry.optJSONArray("outputs") ?: JSONArray()
        return ModelEntry(
            name = entry.getString("name"),
            artifact = entry.getString("artifact"),
            recipe = entry.getJSONObject("quantization").getString("recipe"),
            inputs = inputs,
            outputs = (0 until outputs.length()).map { i ->
                val o = outputs.getJSONObject(i)
                OutputSpec(o.getString("name"), o.getString("dtype"), dims(o.optJSONArray("shape") ?: JSONArray()),
                           o.getString("meaning"))
            },
            preprocessing = entry.optJSONObject("preprocessing")?.let { preprocessing(it, inputs) },
            reference = entry.optJSONObject("reference")?.let { reference(it) },
        )
    }

    private fun preprocessing(p: JSONObject, inputs: List<TensorSpec>): Preprocessing {
        val size = p.getJSONArray("size")
        return Preprocessing(
            input = p.optString("input", inputs.first().name),
            height = size.getInt(0),
            width = size.getInt(1),
            resize = p.optString("resize", "stretch"),
            padValue = p.optInt("pad_value", 114),
            layout = p.optString("layout", "NCHW"),
            color = p.optString("color", "RGB"),
            scale = p.optDouble("scale", 1.0 / 255.0),
            mean = doubles(p.optJSONArray("mean"), 0.0),
            std = doubles(p.optJSONArray("std"), 1.0),
        )
    }

    private fun reference(r: JSONObject): ReferencePair {
        require(r.getString("byte_order") == "little") { "reference files must be little-endian" }
        val check = r.getJSONObject("check")
        return ReferencePair(
            inputs = tensors(r.getJSONArray("inputs")),
            outputs = tensors(r.getJSONArray("outputs")),
            equalWithin = check.getDouble("equal_within"),
            cosineMin = check.optDouble("cosine_min", 0.0),
            sameTop1 = check.optBoolean("same_top1", false),
        )
    }

    private fun tensors(items: JSONArray): List<ReferenceTensor> = (0 until items.length()).map { i ->
        val t = items.getJSONObject(i)
        ReferenceTensor(t.getString("name"), t.getString("file"), t.getString("dtype"), dims(t.getJSONArray("shape")))
    }

    private fun dims(a: JSONArray): LongArray = LongArray(a.length()) { d -> (a.opt(d) as? Number)?.toLong() ?: -1L }

    private fun doubles(a: JSONArray?, default: Double): DoubleArray =
        if (a == null || a.length() == 0) doubleArrayOf(default) else DoubleArray(a.length()) { a.getDouble(it) }

    private fun toMap(obj: JSONObject?): Map<String, Any> =
        obj?.keys()?.asSequence()?.associateWith { obj.get(it) }?.toSortedMap() ?: emptyMap()
}
