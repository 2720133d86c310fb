import groovy.json.JsonSlurper

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// The runtime must be the onnxruntime version that wrote model.ort: read it from the bundle's
// manifest.json (toolchain.onnxruntime) so the two cannot disagree. Override with -PortVersion=1.x.y.
val bundleManifest = file("src/main/assets/bundle/manifest.json")
@Suppress("UNCHECKED_CAST")
val toolchain: Map<String, Any?> = if (bundleManifest.isFile) {
    (JsonSlurper().parse(bundleManifest) as Map<String, Any?>)["toolchain"] as Map<String, Any?>
} else {
    throw GradleException("copy the bundle folder to app/src/main/assets/bundle/ (see README.md)")
}
val ortVersion: String = (findProperty("ortVersion") as String?) ?: (toolchain["onnxruntime"] as String)
// QNN bundles (android-qnn*): the QNN EP plugin of the version that compiled the context binaries, and a QNN
// runtime whose QAIRT version accepts them (toolchain.qnn_sdk; pass -PqnnRuntimeVersion=2.x.y, see README.md)
val qnnPluginVersion: String? = toolchain["onnxruntime-qnn"] as String?

android {
    namespace = "dev.edgepack.sample"
    compileSdk = 34

    defaultConfig {
        applicationId = "dev.edgepack.sample"
        minSdk = 29 // the bundle's runtime recipe builds for --android_api 29 (NNAPI per-channel int8 needs 29+)
        targetSdk = 34
        versionCode = 1
        versionName = "1.0"
        ndk { abiFilters += "arm64-v8a" } // the bundle's ABI (manifest target.abi)
    }

    androidResources {
        // keep the models uncompressed in the APK (copied out once and loaded by path): .ort, and a QNN
        // bundle's context model (.onnx), its context binary (.bin) and its fallback model (.onnx)
        noCompress += listOf("ort", "onnx", "bin")
    }

    packaging {
        jniLibs { useLegacyPackaging = true } // QNN: the EP and the HTP skeleton are loaded from nativeLibraryDir
    }

    buildTypes {
        release { isMinifyEnabled = false }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}

dependencies {
    // Stock package from Maven Central (every operator, ~15 MB per ABI):
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$ortVersion")
    // Or the reduced AAR the bundle's build_runtime.sh builds (only this model's operators, with the JNI
    // library and Java API: onnxruntime's build_aar_package.py with --build_java): copy
    // onnxruntime/build/edgepack/onnxruntime-release.aar to app/libs/ and swap the line above for this one:
    // implementation(files("libs/onnxruntime-release.aar"))
    if (qnnPluginVersion != null) {
        val qnnRuntime = findProperty("qnnRuntimeVersion") as String?
            ?: throw GradleException("a QNN bundle: pass -PqnnRuntimeVersion=<com.qualcomm.qti:qnn-runtime version compatible " +
                                     "with QAIRT ${toolchain["qnn_sdk"]}> (see README.md)")
        implementation("com.qualcomm.qti:onnxruntime-android-qnn:$qnnPluginVersion")
        implementation("com.qualcomm.qti:qnn-runtime:$qnnRuntime")
    }
}
