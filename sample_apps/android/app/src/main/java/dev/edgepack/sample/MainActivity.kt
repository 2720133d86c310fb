package dev.edgepack.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.providers.NNAPIFlags
import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.widget.TextView
import java.nio.FloatBuffer
import java.util.EnumSet
import kotlin.concurrent.thread

/** Loads model.ort from assets exactly as manifest.json says, runs it and shows output and latency. */
class MainActivity : Activity() {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val view = TextView(this).apply { setPadding(32, 32, 32, 32); text = "loading the bundle..." }
        setContentView(view)
        thread(name = "edgepack-inference") {
            val report = try {
                run()
            } catch (e: Exception) {
                Log.e(TAG, "bundle failed", e)
                "error: ${e.message}"
            }
            runOnUiThread { view.text = report }
        }
    }

    private fun run(): String {
        val manifest = ManifestReader.parse(assets.open("manifest.json").bufferedReader().use { it.readText() })
        sessionOptions(manifest).use { options ->
            val bytes = assets.open(manifest.model.artifact).use { it.readBytes() }
            env.createSession(bytes, options).use { session ->
                val input = manifest.model.inputs.single()
                require(input.dtype == "float32") { "this sample feeds float32 inputs; '${input.name}' is ${input.dtype}" }
                val shape = input.shape.map { if (it < 0) 1L else it }.toLongArray() // open dims (batch) -> 1
                val data = FloatArray(shape.fold(1L) { a, b -> a * b }.toInt()) // replace with your real input
                OnnxTensor.createTensor(env, FloatBuffer.wrap(data), shape).use { tensor ->
                    val feed = mapOf(input.name to tensor)
                    session.run(feed).close() // warm-up: NNAPI compiles the model on the first run
                    val times = (1..RUNS).map {
                        val t0 = System.nanoTime()
                        session.run(feed).close()
                        (System.nanoTime() - t0) / 1e6
                    }.sorted()
                    session.run(feed).use { result ->
                        val out = result.get(0) as OnnxTensor
                        val scores = out.floatBuffer.let { b -> FloatArray(b.remaining()).also { b.get(it) } }
                        val best = scores.indices.maxByOrNull { scores[it] } ?: -1
                        return buildString {
                            appendLine("${manifest.targetName}: ${manifest.model.artifact} (${manifest.model.recipe})")
                            appendLine("provider: ${manifest.executionProvider} ${manifest.providerOptions}")
                            appendLine("onnxruntime: bundle written by ${manifest.onnxruntimeVersion}")
                            appendLine("output ${session.outputNames.first()}: shape ${out.info.shape.contentToString()}")
                            appendLine("predicted class: $best")
                            appendLine("latency: median %.3f ms over %d runs".format(times[times.size / 2], RUNS))
                        }
                    }
                }
            }
        }
    }

    /** Session options from the manifest's runtime block: config entries, then the execution provider. */
    private fun sessionOptions(manifest: BundleManifest): OrtSession.SessionOptions {
        val options = OrtSession.SessionOptions()
        manifest.sessionConfig.forEach { (key, value) -> options.addConfigEntry(key, value) }
        when (manifest.executionProvider) {
            "NNAPI" -> options.addNnapi(nnapiFlags(manifest.providerOptions))
            "CPU" -> Unit
            else -> throw IllegalArgumentException("execution provider ${manifest.executionProvider} is not for Android")
        }
        return options
    }

    /** NNAPI_FLAG_USE_FP16 = true -> NNAPIFlags.USE_FP16, and so on; false flags stay off. */
    private fun nnapiFlags(options: Map<String, Any>): EnumSet<NNAPIFlags> {
        val flags = EnumSet.noneOf(NNAPIFlags::class.java)
        for ((key, value) in options) {
            val on = value == true || value.toString() == "1" || value.toString().equals("true", ignoreCase = true)
            if (on) flags.add(NNAPIFlags.valueOf(key.removePrefix("NNAPI_FLAG_")))
        }
        return flags
    }

    companion object {
        private const val TAG = "edgepack"
        private const val RUNS = 20
    }
}
