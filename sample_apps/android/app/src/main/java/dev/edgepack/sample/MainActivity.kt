package dev.edgepack.sample

import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.widget.TextView
import kotlin.concurrent.thread

/**
 * Opens the bundle in assets/bundle/ (one session for the process: [BundleRunner.shared]; a QNN bundle
 * through its fallback order), runs its reference input, checks the outputs against the reference outputs
 * on this first run, then times the same input and shows every output as the manifest describes it.
 */
class MainActivity : Activity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val view = TextView(this).apply { setPadding(32, 32, 32, 32); text = "loading the bundle..." }
        setContentView(view)
        thread(name = "edgepack-inference") {
            val report = try {
                run()
            } catch (e: UnsatisfiedLinkError) {
                // the AAR has no native library for this device's ABI, or the reduced AAR lacks the JNI library
                Log.e(TAG, "onnxruntime native library", e)
                "error: onnxruntime's native library did not load (${e.message}); this bundle is for " +
                    "arm64-v8a devices, and a reduced AAR must be built with --build_java (build_runtime.sh does)"
            } catch (e: Exception) {
                Log.e(TAG, "bundle failed", e)
                "error: ${e.message}"
            }
            runOnUiThread { view.text = report }
        }
    }

    private fun run(): String {
        val runner = BundleRunner.shared(this)
        val manifest = runner.manifest
        val model = manifest.model
        val feed = runner.referenceInputs()
        try {
            val first = runner.run(feed) // first run: NNAPI (or QNN, for the fallback model) compiles; checked against the reference
            val check = runner.checkReference(first)
            val times = (1..RUNS).map {
                val t0 = System.nanoTime()
                runner.run(feed)
                (System.nanoTime() - t0) / 1e6
            }.sorted()
            return buildString {
                appendLine("${manifest.targetName}: ${model.artifact} (${model.recipe})")
                appendLine("provider: ${runner.running} ${manifest.providerOptions}")
                appendLine("onnxruntime: bundle written by ${manifest.onnxruntimeVersion}")
                runner.notes.forEach { appendLine("note: $it") }
                appendLine("input: ${model.inputs.joinToString { "${it.name} ${it.dtype} ${it.shape.contentToString()}" }}")
                appendLine(model.preprocessing?.let { p ->
                    "preprocessing: ${p.resize} ${p.height}x${p.width}, ${p.color}, ${p.layout}, scale ${p.scale}, " +
                        "mean ${p.mean.contentToString()}, std ${p.std.contentToString()} (Preprocess.tensor(bitmap))"
                } ?: "preprocessing: none recorded (the model takes raw tensors of the shapes above)")
                appendLine("reference check (first run): $check")
                for (spec in model.outputs) {
                    val (shape, values) = first[spec.name] ?: continue
                    appendLine("output ${spec.name}: ${spec.dtype} ${shape.contentToString()} - ${spec.meaning}")
                    if (shape.size == 2 && shape[1] > 1 && values.isNotEmpty()) {
                        val best = (0 until shape[1].toInt()).maxByOrNull { values[it] } ?: -1
                        appendLine("  predicted class (sample 0): $best")
                    }
                }
                appendLine("latency: median %.3f ms over %d runs".format(times[times.size / 2], RUNS))
            }
        } finally {
            feed.values.forEach { it.close() }
        }
    }

    companion object {
        private const val TAG = "edgepack"
        private const val RUNS = 20
    }
}
