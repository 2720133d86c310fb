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
 * A QNN bundle's model: [context] (EPContext model) + [contextBinary] compiled for one SoC, and
 * [fallback] (the model they came from) for other SoCs, NNAPI or the CPU (runtime.models.<name>).
 */
data class QnnFiles(
    val epLibrary: String,
    val registrationName: String,
    val context: String,
    val contextBinary: String,
    val fallback: String,
)

data class ModelEntry(
    val name: String,
    val artifact: String,
    val recipe: String,
    val inputs: List<TensorSpec>,
)

/** An input of the shipped model; [shape] holds -1 for a dimension the bundle leaves open. */
data class TensorSpec(val name: String, val dtype: String, val shape: LongArray)

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

    /** runtime.ep_library, runtime.ep_registration_name and runtime.models.<name> of a QNN bundle. */
    private fun qnnFiles(runtime: JSONObject, modelName: String): QnnFiles? {
        if (runtime.getString("execution_provider") != "QNN") return null
        val files = runtime.getJSONObject("models").getJSONObject(modelName)
        return QnnFiles(
            epLibrary = runtime.getString("ep_library"),
            registrationName = runtime.getString("ep_registration_name"),
            context = files.getString("context"),
            contextBinary = files.getString("context_binary"),
            fallback = files.getString("fallback"),
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
            TensorSpec(name, t.getString("dtype"), LongArray(dims.length()) { d -> (dims.opt(d) as? Number)?.toLong() ?: -1L })
        }
        return ModelEntry(
            name = entry.getString("name"),
            artifact = entry.getString("artifact"),
            recipe = entry.getJSONObject("quantization").getString("recipe"),
            inputs = inputs,
        )
    }

    private fun toMap(obj: JSONObject?): Map<String, Any> =
        obj?.keys()?.asSequence()?.associateWith { obj.get(it) }?.toSortedMap() ?: emptyMap()
}
