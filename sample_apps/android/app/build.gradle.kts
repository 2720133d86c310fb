import groovy.json.JsonSlurper

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// The runtime must be the onnxruntime version that wrote model.ort: read it from the bundle's
// manifest.json (toolchain.onnxruntime) so the two cannot disagree. Override with -PortVersion=1.x.y.
val bundleManifest = file("src/main/assets/bundle/manifest.json")
val ortVersion: String = (findProperty("ortVersion") as String?)
    ?: if (bundleManifest.isFile) {
        @Suppress("UNCHECKED_CAST")
        val toolchain = (JsonSlurper().parse(bundleManifest) as Map<String, Any?>)["toolchain"] as Map<String, Any?>
        toolchain["onnxruntime"] as String
    } else {
        throw GradleException("copy the bundle folder to app/src/main/assets/bundle/ (see README.md)")
    }

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
        noCompress += "ort" // keep the model uncompressed in the APK (copied out once and loaded by path)
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
}
