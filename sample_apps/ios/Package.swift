// swift-tools-version:5.9
// The edgepack bundle loader as a Swift package; App/ holds the two files of the iOS app that uses it.
import PackageDescription

let package = Package(
    name: "EdgepackSample",
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "EdgepackSample", targets: ["EdgepackSample"]),
    ],
    dependencies: [
        // Must be the onnxruntime version that wrote model.ort: the bundle's manifest toolchain.onnxruntime.
        .package(url: "https://github.com/microsoft/onnxruntime-swift-package-manager", exact: "1.32.0"),
    ],
    targets: [
        .target(
            name: "EdgepackSample",
            dependencies: [.product(name: "onnxruntime", package: "onnxruntime-swift-package-manager")]
        ),
    ]
)
