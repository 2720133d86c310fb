import Foundation
#if canImport(OnnxRuntimeBindings)
import OnnxRuntimeBindings // Swift Package Manager: onnxruntime-swift-package-manager
#else
import onnxruntime_objc // CocoaPods: pod 'onnxruntime-objc'
#endif

/// One ONNX Runtime session for a bundle, made as the bundle's manifest says and reused for every run
/// (keep the runner: `BundleRunner.shared(directory:)`). The model is loaded by path; Core ML gets a
/// model cache directory so the ML Program is compiled once, not at every launch; when the accelerator
/// session cannot be created the runner falls back to the CPU and says so in `notes`.
public final class BundleRunner {
    public let manifest: BundleManifest
    public let model: BundleManifest.Model
    public private(set) var notes: [String] = []
    private let directory: URL
    private let env: ORTEnv
    private let session: ORTSession

    private static var runners: [URL: BundleRunner] = [:]
    private static let lock = NSLock()

    /// The process's runner for the bundle folder `directory` (made on first use, then reused).
    public static func shared(directory: URL) throws -> BundleRunner {
        lock.lock()
        defer { lock.unlock() }
        if let runner = runners[directory] { return runner }
        let runner = try BundleRunner(directory: directory)
        runners[directory] = runner
        return runner
    }

    /// `directory` holds manifest.json, the model artifact and reference/ (a folder reference in the app bundle).
    public init(directory: URL, modelName: String? = nil) throws {
        let manifest = try BundleManifest.load(from: directory.appendingPathComponent("manifest.json"))
        let model = try manifest.model(named: modelName)
        let env = try ORTEnv(loggingLevel: .warning)
        let path = directory.appendingPathComponent(model.artifact).path
        let provider = manifest.runtime.executionProvider
        var notes: [String] = []
        let session: ORTSession
        do {
            session = try ORTSession(env: env, modelPath: path, sessionOptions: try Self.options(manifest, accelerator: true))
        } catch where provider != "CPU" {
            notes.append("\(provider) session failed (\(error)); running on the CPU")
            session = try ORTSession(env: env, modelPath: path, sessionOptions: try Self.options(manifest, accelerator: false))
        }
        if provider == "CoreML" && !ORTIsCoreMLExecutionProviderAvailable() {
            notes.append("this onnxruntime build has no CoreML execution provider: running on the CPU")
        }
        self.directory = directory
        self.manifest = manifest
        self.model = model
        self.env = env
        self.session = session
        self.notes = notes
    }

    /// Where Core ML keeps the compiled ML Program between launches.
    static func modelCacheDirectory() throws -> URL {
        let caches = try FileManager.default.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let dir = caches.appendingPathComponent("edgepack-coreml", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    static func options(_ manifest: BundleManifest, accelerator: Bool) throws -> ORTSessionOptions {
        let options = try ORTSessionOptions()
        for (key, value) in (manifest.runtime.sessionConfig ?? [:]).sorted(by: { $0.key < $1.key }) {
            try options.addConfigEntry(withKey: key, value: value)
        }
        // the performance cores; more threads than those only adds contention on a phone
        try options.setIntraOpNumThreads(Int32(min(ProcessInfo.processInfo.activeProcessorCount, 2)))
        guard accelerator else { return options }
        switch manifest.runtime.executionProvider {
        case "CoreML":
            if ORTIsCoreMLExecutionProviderAvailable() {
                // ModelFormat=MLProgram, MLComputeUnits, RequireStaticInputShapes: exactly the manifest's options,
                // plus a cache directory so the ML Program is compiled once
                var coreml = (manifest.runtime.providerOptions ?? [:]).mapValues(\.string)
                coreml["ModelCacheDirectory"] = try modelCacheDirectory().path
                try options.appendCoreMLExecutionProvider(withOptionsV2: coreml)
            }
        case "CPU":
            break
        default:
            throw BundleError.unsupported("execution provider \(manifest.runtime.executionProvider) is not for iOS")
        }
        return options
    }

    // MARK: - the reference pair

    private func data(_ t: BundleManifest.ReferenceTensor) throws -> Data {
        try Data(contentsOf: directory.appendingPathComponent(t.file))
    }

    private static let elementTypes: [String: ORTTensorElementDataType] = [
        "float32": .float, "int64": .int64, "int32": .int32, "uint8": .uInt8, "int8": .int8,
    ]

    /// The bundle's reference input, as the feed of a run.
    public func referenceInputs() throws -> [String: ORTValue] {
        guard let reference = model.reference else {
            throw BundleError.unsupported("the bundle has no reference pair (rebuild it with a newer edgepack)")
        }
        guard reference.byteOrder == "little" else { throw BundleError.unsupported("reference files must be little-endian") }
        var feed: [String: ORTValue] = [:]
        for t in reference.inputs {
            guard let type = Self.elementTypes[t.dtype] else {
                throw BundleError.unsupported("this sample reads float32/int64/int32/uint8/int8 inputs; '\(t.name)' is \(t.dtype)")
            }
            feed[t.name] = try ORTValue(tensorData: NSMutableData(data: try data(t)), elementType: type,
                                        shape: t.shape.map { NSNumber(value: $0) })
        }
        return feed
    }

    /// Values of a tensor as doubles (float32, int64, int32), for the comparison and the display.
    static func doubles(_ bytes: Data, dtype: String) -> [Double] {
        bytes.withUnsafeBytes { raw -> [Double] in
            switch dtype {
            case "float32": return raw.bindMemory(to: Float.self).map { Double($0) }
            case "int64": return raw.bindMemory(to: Int64.self).map { Double($0) }
            case "int32": return raw.bindMemory(to: Int32.self).map { Double($0) }
            default: return []
            }
        }
    }

    public struct Outcome {
        public let outputs: [String: (shape: [Int], values: [Double])]
        public let referenceCheck: String
        public let medianMilliseconds: Double
    }

    /// Runs `feed` once (the first run: checked against the reference outputs when `feed` is the
    /// reference input), then times `runs` more runs of it.
    public func run(_ feed: [String: ORTValue], runs: Int = 20, checkReference: Bool = true) throws -> Outcome {
        let names = try session.outputNames()
        let first = try session.run(withInputs: feed, outputNames: Set(names), runOptions: nil) // Core ML compiles (or loads its cache)
        var outputs: [String: (shape: [Int], values: [Double])] = [:]
        for (name, value) in first {
            let info = try value.tensorTypeAndShapeInfo()
            let dtype = info.elementType == .float ? "float32" : info.elementType == .int64 ? "int64" : info.elementType == .int32 ? "int32" : "other"
            outputs[name] = (info.shape.map(\.intValue), Self.doubles(try value.tensorData() as Data, dtype: dtype))
        }
        let check = checkReference ? try self.checkReference(outputs) : "not checked (not the reference input)"
        var times: [Double] = []
        for _ in 0..<max(runs, 1) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try session.run(withInputs: feed, outputNames: Set(names), runOptions: nil)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return Outcome(outputs: outputs, referenceCheck: check, medianMilliseconds: times.sorted()[times.count / 2])
    }

    /// The bundle's check (edgepack/reference.py): per output, equal within `equal_within` of max(|ref|, 1),
    /// or cosine >= `cosine_min` and, with `same_top1`, the same top-1 class on [batch, classes] outputs.
    public func checkReference(_ outputs: [String: (shape: [Int], values: [Double])]) throws -> String {
        guard let reference = model.reference else { return "no reference pair in this bundle: not checked" }
        var lowest = 1.0
        for t in reference.outputs {
            guard let got = outputs[t.name]?.values else { return "FAILED: no output '\(t.name)'" }
            let want = Self.doubles(try data(t), dtype: t.dtype)
            guard got.count == want.count else { return "FAILED: output '\(t.name)' has \(got.count) values, the reference \(want.count)" }
            if got.contains(where: { !$0.isFinite }) { return "FAILED: output '\(t.name)' holds NaN/Inf" }
            let scale = max(want.map(abs).max() ?? 0, 1)
            let maxErr = zip(got, want).map { abs($0 - $1) }.max() ?? 0
            if maxErr / scale <= reference.check.equalWithin { continue }
            let cos = Self.cosine(got, want)
            if cos < (reference.check.cosineMin ?? 0) {
                return String(format: "FAILED: output '%@' cosine %.6f < %.4f", t.name, cos, reference.check.cosineMin ?? 0)
            }
            if reference.check.sameTop1 == true, t.shape.count == 2, t.shape[1] > 1 {
                let classes = t.shape[1]
                for row in 0..<(want.count / classes) {
                    let r = (row * classes)..<((row + 1) * classes)
                    if r.max(by: { got[$0] < got[$1] }) != r.max(by: { want[$0] < want[$1] }) {
                        return "FAILED: output '\(t.name)' top-1 class differs from the reference"
                    }
                }
            }
            lowest = min(lowest, cos)
        }
        return String(format: "passed: %d output(s) match the reference (lowest cosine %.6f)", reference.outputs.count, lowest)
    }

    static func cosine(_ a: [Double], _ b: [Double]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += x * y; na += x * x; nb += y * y }
        if na == 0 && nb == 0 { return 1 }
        if na == 0 || nb == 0 { return 0 }
        return dot / (na.squareRoot() * nb.squareRoot())
    }
}
