package dev.edgepack.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtSession
import ai.onnxruntime.providers.NNAPIFlags
import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.widget.TextView
import java.io.File
import java.nio.FloatBuffer
import java.util.EnumSet
import kotlin.concurrent.thread

/**
 * Loads the bundle's model from assets exactly as manifest.json says, runs it and shows output and latency.
 * A QNN bundle (android-qnn*) opens its context model on the Snapdragon NPU; if that session cannot be created
 * (another SoC, a QNN runtime that does not accept the context binary) it falls back to the bundle's other model
 * on the QNN EP, then NNAPI, then the CPU, and says which one runs.
 */
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
        val (session, how) = openSession(manifest)
        session.use {
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
                        appendLine("provider: $how ${manifest.providerOptions}")
                        appendLine("onnxruntime: bundle written by ${manifest.onnxruntimeVersion}")
                        appendLine("output ${session.outputNames.first()}: shape ${out.info.shape.contentToString()}")
                        appendLine("predicted class: $best")
                        appendLine("latency: median %.3f ms over %d runs".format(times[times.size / 2], RUNS))
                    }
                }
            }
        }
    }

    /** The session and a description of how it runs: the manifest's execution provider, or the QNN fallback chain. */
    private fun openSession(manifest: BundleManifest): Pair<OrtSession, String> {
        val qnn = manifest.qnn
        if (qnn == null) {
            val bytes = assets.open(manifest.model.artifact).use { it.readBytes() }
            return sessionOptions(manifest).use { env.createSession(bytes, it) } to manifest.executionProvider
        }
        // the context model names its binary by file name: both must be files in one folder, opened by path
        val dir = File(filesDir, "bundle").apply { mkdirs() }
        for (name in listOf(qnn.context, qnn.contextBinary, qnn.fallback)) {
            assets.open(name).use { input -> File(dir, name).outputStream().use { input.copyTo(it) } }
        }
        val attempts: List<Pair<String, () -> OrtSession>> = listOf(
            "QNN HTP, ${qnn.context}" to { qnnSession(manifest, qnn, File(dir, qnn.context)) },
            "QNN HTP, ${qnn.fallback} (compiled on the device)" to { qnnSession(manifest, qnn, File(dir, qnn.fallback)) },
            "NNAPI, ${qnn.fallback}" to { withOptions({ addNnapi() }) { env.createSession(File(dir, qnn.fallback).path, it) } },
            "CPU, ${qnn.fallback}" to { withOptions({}) { env.createSession(File(dir, qnn.fallback).path, it) } },
        )
        val failed = mutableListOf<String>()
        for ((how, open) in attempts) {
            try {
                val session = open()
                return session to (how + if (failed.isEmpty()) "" else " [fell back: ${failed.joinToString("; ")}]")
            } catch (e: OrtException) {
                Log.w(TAG, "$how: ${e.message}")
                failed += "$how: ${e.message?.lineSequence()?.firstOrNull() ?: e.javaClass.simpleName}"
            } catch (e: IllegalStateException) {
                Log.w(TAG, "$how: ${e.message}")
                failed += "$how: ${e.message}"
            }
        }
        throw IllegalStateException("no session could be created: ${failed.joinToString("; ")}")
    }

    /** The QNN plugin EP on the NPU with the manifest's provider options (runtime.provider_options). */
    private fun qnnSession(manifest: BundleManifest, qnn: QnnFiles, model: File): OrtSession {
        registerQnn(qnn)
        val devices = env.epDevices.filter { it.epName == qnn.registrationName }
        check(devices.isNotEmpty()) { "the QNN EP registered no device" }
        val providerOptions = manifest.providerOptions.mapValues { it.value.toString() }
        return withOptions({
            manifest.sessionConfig.forEach { (key, value) -> addConfigEntry(key, value) }
            addExecutionProvider(devices, providerOptions)
        }) { env.createSession(model.path, it) }
    }

    /** Register libonnxruntime_providers_qnn.so (from the plugin AAR, extracted to nativeLibraryDir) once. */
    private fun registerQnn(qnn: QnnFiles) {
        synchronized(registered) {
            if (qnn.registrationName in registered) return
            env.registerExecutionProviderLibrary(qnn.registrationName, "${applicationInfo.nativeLibraryDir}/${qnn.epLibrary}")
            registered += qnn.registrationName
        }
    }

    private fun <T> withOptions(configure: OrtSession.SessionOptions.() -> Unit, open: (OrtSession.SessionOptions) -> T): T =
        OrtSession.SessionOptions().use { options -> options.configure(); open(options) }

    /** Session options from the manifest's runtime block: config entries, then the execution provider. */
    private fun sessionOptions(manifest: BundleManifest): OrtSession.SessionOptions {
        val options = OrtSession.SessionOptions()
        manifest.sessionConfig.forEach { (key, value) -> options.addConfigEntry(key, value) }
        when (manifest.executionProvider) {
            "NNAPI" -> options.addNnapi(nnapiFlags(manifest.providerOptions))
            "CPU" -> Unit
            else -> throw IllegalArgumentException("execution provider ${manifest.executionProvider} is not for Android")
        } // (QNN bundles go through openSession's fallback chain)
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
        private val registered = mutableSetOf<String>() // plugin EPs registered with the process-wide environment
    }
}
