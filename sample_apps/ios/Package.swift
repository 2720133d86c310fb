// swift-tools-version:5.9
// The edgepack bundle loader as a Swift package; App/ holds the two files of the iOS app that uses it.
//
// The onnxruntime Swift package must be the version that wrote model.ort (the bundle's manifest
// toolchain.onnxruntime). Not every onnxruntime release has a tag in the Swift package's repository:
// run ./check_spm_version.sh VERSION first; when it finds no tag, use CocoaPods instead (README.md).
// To link the bundle's reduced runtime, build it (build_runtime.sh) and set ORT_POD_LOCAL_PATH before
// resolving: onnxruntime-swift-package-manager's Package.swift then takes the local pod archive.
import PackageDescription

let package = Package(
    name: "EdgepackSample",
    // iOS 15.1: what onnxruntime's pods are built for (--apple_deploy_target=15.1); macOS: the
    // onnxruntime package declares a macOS platform, and a dependent package must declare one too
    platforms: [.iOS("15.1"), .macOS(.v14)],
    products: [
        .library(name: "EdgepackSample", targets: ["EdgepackSample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/microsoft/onnxruntime-swift-package-manager", exact: "1.32.0"),
    ],
    targets: [
        .target(
            name: "EdgepackSample",
            dependencies: [.product(name: "onnxruntime", package: "onnxruntime-swift-package-manager")]
        ),
    ]
)
