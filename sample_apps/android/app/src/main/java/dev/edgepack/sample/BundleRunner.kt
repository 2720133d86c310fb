package dev.edgepack.sample

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtException
import ai.onnxruntime.OrtSession
import ai.onnxruntime.providers.NNAPIFlags
import android.content.Context
import android.util.Log
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.EnumSet
import kotlin.math.abs
import kotlin.math.max
import kotlin.math.sqrt

/**
 * One ONNX Runtime session for the bundle in the app's assets, made once per process and reused:
 * the model is loaded by path (copied out of the APK once, not held as a byte array), with the
 * manifest's session config and execution provider; when the accelerator session cannot be made
 * it falls back to the CPU and says so in [notes]. A QNN bundle (android-qnn*) registers the QNN
 * plugin EP and tries the sessions its runtime.fallback_order lists, in that order ([openQnn]).
 */
class BundleRunner private constructor(context: Context, assetDir: String) {
    val manifest: BundleManifest
    val notes = mutableListOf<String>()
    val env: OrtEnvironment = OrtEnvironment.getEnvironment() // UnsatisfiedLinkError: see MainActivity
    /** What runs the model: the execution provider and, for a QNN bundle, which model file. */
    var running: String = ""
        private set
    private val session: OrtSession
    private val assets = context.assets
    private val dir = assetDir

    init {
        manifest = ManifestReader.parse(assets.open("$dir/manifest.json").bufferedReader().use { it.readText() })
        session = manifest.qnn?.let { openQnn(context, it) } ?: openOne(context)
    }

    /** The manifest's execution provider on models[].artifact, else the CPU. */
    private fun openOne(context: Context): OrtSession {
        val model = copyOut(context, "$dir/${manifest.model.artifact}")
        running = manifest.executionProvider
        return try {
            env.createSession(model.path, options(accelerator = true))
        } catch (e: OrtException) {
            if (manifest.executionProvider == "CPU") throw e
            notes += "${manifest.executionProvider} session failed (${e.message}); running on the CPU"
            running = "CPU"
            env.createSession(model.path, options(accelerator = false))
        }
    }

    /**
     * A QNN bundle: the context model (+ its context binary, named by file name: both copied into one folder
     * and opened by path) and the fallback model. Tries each step of runtime.fallback_order in turn - a context
     * binary loads only on the SoC it was compiled for, with a compatible QNN runtime - and notes why the
     * steps before the one that runs failed.
     */
    private fun openQnn(context: Context, qnn: QnnFiles): OrtSession {
        val contextModel = copyOut(context, "$dir/${qnn.context}")
        copyOut(context, "$dir/${qnn.contextBinary}")
        val fallback = copyOut(context, "$dir/${qnn.fallback}")
        val steps = qnn.fallbackOrder.mapNotNull { text ->
            FallbackStep.of(text).also { if (it == null) notes += "runtime.fallback_order step '$text' is not one this app knows; skipped" }
        }.ifEmpty { FallbackStep.DEFAULT }
        val failed = mutableListOf<String>()
        for (step in steps) {
            val model = if (step == FallbackStep.QNN_CONTEXT) contextModel else fallback
            try {
                val session = when (step) {
                    FallbackStep.QNN_CONTEXT, FallbackStep.QNN_FALLBACK ->
                        qnnOptions(context, qnn).use { env.createSession(model.path, it) }
                    FallbackStep.NNAPI_FALLBACK ->
                        options(accelerator = false).use { it.addNnapi(); env.createSession(model.path, it) }
                    FallbackStep.CPU -> options(accelerator = false).use { env.createSession(model.path, it) }
                }
                running = "${step.label}, ${model.name}" + if (step == FallbackStep.QNN_CONTEXT) " (compiled for ${qnn.soc})" else ""
                if (failed.isNotEmpty()) notes += "fell back: ${failed.joinToString("; ")}"
                return session
            } catch (e: OrtException) {
                Log.w(TAG, "${step.label}: ${e.message}")
                failed += "${step.label} failed: ${e.message?.lineSequence()?.firstOrNull() ?: e.javaClass.simpleName}"
            } catch (e: IllegalStateException) { // no QNN device registered
                Log.w(TAG, "${step.label}: ${e.message}")
                failed += "${step.label} failed: ${e.message}"
            }
        }
        throw IllegalStateException("no session could be created: ${failed.joinToString("; ")}")
    }

    /** The QNN plugin EP on the HTP with runtime.provider_options (and the session config, the threads). */
    private fun qnnOptions(context: Context, qnn: QnnFiles): OrtSession.SessionOptions {
        registerQnn(context, qnn)
        val devices = env.epDevices.filter { it.epName == qnn.registrationName }
        check(devices.isNotEmpty()) { "the QNN EP registered no device" }
        val options = options(accelerator = false)
        options.addExecutionProvider(devices, manifest.providerOptions.mapValues { it.value.toString() })
        return options
    }

    /** Registers libonnxruntime_providers_qnn.so (from the plugin AAR, in nativeLibraryDir) once per process. */
    private fun registerQnn(context: Context, qnn: QnnFiles) {
        require('/' !in qnn.epLibrary) { "runtime.ep_library must be a file name, not '${qnn.epLibrary}'" }
        synchronized(registered) {
            if (qnn.registrationName in registered) return
            env.registerExecutionProviderLibrary(qnn.registrationName,
                                                 "${context.applicationInfo.nativeLibraryDir}/${qnn.epLibrary}")
            registered += qnn.registrationName
        }
    }

    /** The model file in the app's private storage: copied from the APK once (and again when its size changes). */
    private fun copyOut(context: Context, asset: String): File {
        val dst = File(context.filesDir, "edgepack/${asset.substringAfterLast('/')}")
        val size = assets.openFd(asset).use { it.length }
        if (!dst.isFile || dst.length() != size) {
            dst.parentFile?.mkdirs()
            assets.open(asset).use { input -> dst.outputStream().use { input.copyTo(it) } }
        }
        return dst
    }

    private fun options(accelerator: Boolean): OrtSession.SessionOptions {
        val options = OrtSession.SessionOptions()
        manifest.sessionConfig.forEach { (key, value) -> options.addConfigEntry(key, value) }
        // the big cores; more threads than cores only adds contention on a phone
        options.setIntraOpNumThreads(Runtime.getRuntime().availableProcessors().coerceIn(1, INTRA_OP_THREADS))
        if (accelerator) {
            when (manifest.executionProvider) {
                "NNAPI" -> options.addNnapi(nnapiFlags(manifest.providerOptions))
                "CPU" -> Unit
                else -> throw IllegalArgumentException("execution provider ${manifest.executionProvider} is not for Android")
            }
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

    /** The bundle's reference input, as tensors (name -> tensor); the caller closes them. */
    fun referenceInputs(): Map<String, OnnxTensor> {
        val ref = manifest.model.reference ?: throw IllegalStateException("the bundle has no reference pair (rebuild it)")
        return ref.inputs.associate { it.name to tensorOf(it) }
    }

    private fun bytes(t: ReferenceTensor): ByteBuffer {
        val raw = assets.open("$dir/${t.file}").use { it.readBytes() }
        return ByteBuffer.allocateDirect(raw.size).order(ByteOrder.LITTLE_ENDIAN).put(raw).also { it.rewind() }
    }

    private fun tensorOf(t: ReferenceTensor): OnnxTensor {
        val b = bytes(t)
        return when (t.dtype) {
            "float32" -> OnnxTensor.createTensor(env, b.asFloatBuffer(), t.shape)
            "int64" -> OnnxTensor.createTensor(env, b.asLongBuffer(), t.shape)
            "int32" -> OnnxTensor.createTensor(env, b.asIntBuffer(), t.shape)
            "uint8" -> OnnxTensor.createTensor(env, b, t.shape, OnnxJavaType.UINT8)
            "int8" -> OnnxTensor.createTensor(env, b, t.shape, OnnxJavaType.INT8)
            else -> throw IllegalArgumentException("this sample reads float32/int64/int32/uint8/int8 inputs; '${t.name}' is ${t.dtype}")
        }
    }

    /** The values of a reference output file, as doubles (for the comparison). */
    private fun referenceValues(t: ReferenceTensor): DoubleArray {
        val b = bytes(t)
        return when (t.dtype) {
            "float32" -> b.asFloatBuffer().let { f -> DoubleArray(f.remaining()) { f.get(it).toDouble() } }
            "int64" -> b.asLongBuffer().let { l -> DoubleArray(l.remaining()) { l.get(it).toDouble() } }
            "int32" -> b.asIntBuffer().let { i -> DoubleArray(i.remaining()) { i.get(it).toDouble() } }
            else -> throw IllegalArgumentException("this sample compares float32/int64/int32 outputs; '${t.name}' is ${t.dtype}")
        }
    }

    /** Runs [feed]; every output as doubles with its shape (the caller keeps the session). */
    fun run(feed: Map<String, OnnxTensor>): Map<String, Pair<LongArray, DoubleArray>> =
        session.run(feed).use { result ->
            result.associate { (name, value) ->
                val tensor = value as OnnxTensor
                val values = when (tensor.info.type) {
                    OnnxJavaType.FLOAT -> tensor.floatBuffer.let { f -> DoubleArray(f.remaining()) { f.get(it).toDouble() } }
                    OnnxJavaType.INT64 -> tensor.longBuffer.let { l -> DoubleArray(l.remaining()) { l.get(it).toDouble() } }
                    OnnxJavaType.INT32 -> tensor.intBuffer.let { i -> DoubleArray(i.remaining()) { i.get(it).toDouble() } }
                    else -> DoubleArray(0)
                }
                name to Pair(tensor.info.shape, values)
            }
        }

    /** The first-run check: the outputs on the reference input against the reference outputs (edgepack.reference). */
    fun checkReference(outputs: Map<String, Pair<LongArray, DoubleArray>>): String {
        val ref = manifest.model.reference ?: return "no reference pair in this bundle: not checked"
        var lowest = 1.0
        for (t in ref.outputs) {
            val got = outputs[t.name]?.second ?: return "FAILED: no output '${t.name}'"
            val want = referenceValues(t)
            if (got.size != want.size) return "FAILED: output '${t.name}' has ${got.size} values, the reference ${want.size}"
            if (got.any { it.isNaN() || it.isInfinite() }) return "FAILED: output '${t.name}' holds NaN/Inf"
            val scale = max(want.maxOfOrNull { abs(it) } ?: 0.0, 1.0)
            val maxErr = got.indices.maxOfOrNull { abs(got[it] - want[it]) } ?: 0.0
            if (maxErr / scale <= ref.equalWithin) continue
            val cos = cosine(got, want)
            if (cos < ref.cosineMin) return "FAILED: output '${t.name}' cosine %.6f < %s".format(cos, ref.cosineMin)
            if (ref.sameTop1 && t.shape.size == 2 && t.shape[1] > 1) {
                val classes = t.shape[1].toInt()
                for (row in 0 until want.size / classes) {
                    val r = row * classes until (row + 1) * classes
                    if (r.maxByOrNull { got[it] } != r.maxByOrNull { want[it] }) {
                        return "FAILED: output '${t.name}' top-1 class differs from the reference"
                    }
                }
            }
            lowest = minOf(lowest, cos)
        }
        return "passed: ${ref.outputs.size} output(s) match the reference (lowest cosine %.6f)".format(lowest)
    }

    private fun cosine(a: DoubleArray, b: DoubleArray): Double {
        var dot = 0.0; var na = 0.0; var nb = 0.0
        for (i in a.indices) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i] }
        if (na == 0.0 && nb == 0.0) return 1.0
        if (na == 0.0 || nb == 0.0) return 0.0
        return dot / (sqrt(na) * sqrt(nb))
    }

    companion object {
        private const val TAG = "edgepack"
        private const val INTRA_OP_THREADS = 4
        private val registered = mutableSetOf<String>() // plugin EPs registered with the process-wide environment
        @Volatile private var shared: BundleRunner? = null

        /** The process's runner for the bundle in assets/[assetDir] (made on first use, then reused). */
        fun shared(context: Context, assetDir: String = "bundle"): BundleRunner =
            shared ?: synchronized(this) {
                shared ?: BundleRunner(context.applicationContext, assetDir).also { shared = it }
            }
    }
}

/**
 * A step of a QNN bundle's runtime.fallback_order, known by the words edgepack writes there
 * (edgepack/backends/qnn/package.py); [DEFAULT] when the manifest lists none.
 */
enum class FallbackStep(val prefix: String, val label: String) {
    QNN_CONTEXT("QNN HTP with the context model", "QNN HTP"),
    QNN_FALLBACK("QNN HTP with the fallback model", "QNN HTP (compiled on the device)"),
    NNAPI_FALLBACK("NNAPI with the fallback model", "NNAPI"),
    CPU("CPU", "CPU");

    companion object {
        val DEFAULT = listOf(QNN_CONTEXT, QNN_FALLBACK, NNAPI_FALLBACK, CPU)

        fun of(text: String): FallbackStep? = values().firstOrNull { text.startsWith(it.prefix) }
    }
}
