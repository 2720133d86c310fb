import Foundation
#if canImport(OnnxRuntimeBindings)
import OnnxRuntimeBindings // Swift Package Manager: onnxruntime-swift-package-manager
#else
import onnxruntime_objc // CocoaPods: pod 'onnxruntime-objc'
#endif

/// Creates the ONNX Runtime session exactly as the bundle's manifest says and runs it.
public final class BundleRunner {
    public let manifest: BundleManifest
    public let model: BundleManifest.Model
    public private(set) var notes: [String] = []
    private let env: ORTEnv
    private let session: ORTSession

    /// `directory` holds manifest.json and the model artifact (a folder reference in the app bundle).
    public init(directory: URL, modelName: String? = nil) throws {
        manifest = try BundleManifest.load(from: directory.appendingPathComponent("manifest.json"))
        model = try manifest.model(named: modelName)
        env = try ORTEnv(loggingLevel: .warning)
        let options = try ORTSessionOptions()
        for (key, value) in (manifest.runtime.sessionConfig ?? [:]).sorted(by: { $0.key < $1.key }) {
            try options.addConfigEntry(withKey: key, value: value)
        }
        switch manifest.runtime.executionProvider {
        case "CoreML":
            if ORTIsCoreMLExecutionProviderAvailable() {
                // ModelFormat=MLProgram, MLComputeUnits, RequireStaticInputShapes: exactly the manifest's options
                let coreml = (manifest.runtime.providerOptions ?? [:]).mapValues(\.string)
                try options.appendCoreMLExecutionProvider(withOptionsV2: coreml)
            } else {
                notes.append("this onnxruntime build has no CoreML execution provider: running on the CPU")
            }
        case "CPU":
            break
        default:
            throw BundleError.unsupported("execution provider \(manifest.runtime.executionProvider) is not for iOS")
        }
        let path = directory.appendingPathComponent(model.artifact).path
        session = try ORTSession(env: env, modelPath: path, sessionOptions: options)
    }

    public struct Outcome {
        public let outputName: String
        public let shape: [Int]
        public let predictedClass: Int
        public let medianMilliseconds: Double
    }

    /// Runs `values` (float32, the model's first input; nil = zeros) `runs` times after one warm-up run.
    public func run(_ values: [Float]? = nil, runs: Int = 20) throws -> Outcome {
        guard let input = model.inputs.first, model.inputs.count == 1 else {
            throw BundleError.unsupported("this sample feeds models with one input")
        }
        guard input.dtype == "float32" else {
            throw BundleError.unsupported("this sample feeds float32; input '\(input.name)' is \(input.dtype)")
        }
        let shape = (input.shape ?? []).map { $0.value ?? 1 } // open dimensions (batch) -> 1
        let count = shape.reduce(1, *)
        var data = values ?? [Float](repeating: 0, count: count)
        guard data.count == count else {
            throw BundleError.unsupported("input '\(input.name)' needs \(count) values for shape \(shape), got \(data.count)")
        }
        let tensor = try ORTValue(tensorData: NSMutableData(bytes: &data, length: count * MemoryLayout<Float>.stride),
                                  elementType: .float, shape: shape.map { NSNumber(value: $0) })
        let outputName = try session.outputNames()[0]
        let feed = [input.name: tensor]
        _ = try session.run(withInputs: feed, outputNames: [outputName], runOptions: nil) // warm-up: CoreML compiles
        var times: [Double] = []
        var last: ORTValue?
        for _ in 0..<max(runs, 1) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            last = try session.run(withInputs: feed, outputNames: [outputName], runOptions: nil)[outputName]
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        guard let out = last else { throw BundleError.unsupported("no output '\(outputName)'") }
        let outShape = try out.tensorTypeAndShapeInfo().shape.map(\.intValue)
        let bytes = try out.tensorData() as Data
        let scores = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let best = scores.indices.max(by: { scores[$0] < scores[$1] }) ?? -1
        return Outcome(outputName: outputName, shape: outShape, predictedClass: best,
                       medianMilliseconds: times.sorted()[times.count / 2])
    }
}
