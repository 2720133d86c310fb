import Foundation

/// The fields of an edgepack bundle's manifest.json this app uses (schemas/manifest.schema.json, schema_version 1).
/// Every key is spelled out in a CodingKeys enum so tests/test_sample_apps.py can check it against the schema.
public struct BundleManifest: Decodable {
    public static let supportedSchemaVersion = 1

    public let schemaVersion: Int
    public let target: Target
    public let models: [Model]
    public let toolchain: [String: String]
    public let runtime: Runtime

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case target = "target"
        case models = "models"
        case toolchain = "toolchain"
        case runtime = "runtime"
    }

    public struct Target: Decodable {
        public let name: String
        public let engine: String

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case engine = "engine"
        }
    }

    public struct Runtime: Decodable {
        public let executionProvider: String
        /// CoreML: ModelFormat, MLComputeUnits, RequireStaticInputShapes, passed as they are to the V2 options.
        public let providerOptions: [String: OptionValue]?
        public let sessionConfig: [String: String]?

        enum CodingKeys: String, CodingKey {
            case executionProvider = "execution_provider"
            case providerOptions = "provider_options"
            case sessionConfig = "session_config"
        }
    }

    public struct Model: Decodable {
        public let name: String
        public let artifact: String
        public let sourceModel: SourceModel
        public let shippedInputs: ShippedInputs
        /// What each output is: name, dtype, shape, meaning.
        public let outputs: [Output]?
        /// How an image becomes the input (nil: the model takes raw tensors).
        public let preprocessing: Preprocessing?
        /// The input/output pair the first run is checked against (nil in bundles built before it existed).
        public let reference: Reference?

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case artifact = "artifact"
            case sourceModel = "source_model"
            case shippedInputs = "shipped_inputs"
            case outputs = "outputs"
            case preprocessing = "preprocessing"
            case reference = "reference"
        }

        /// Inputs of the shipped model; a dimension the bundle leaves open is nil.
        public var inputs: [Tensor] {
            sourceModel.inputs.map { t in
                if case .fixed(let shapes) = shippedInputs, let dims = shapes[t.name] {
                    return Tensor(name: t.name, dtype: t.dtype, shape: dims)
                }
                return t
            }
        }
    }

    public struct Output: Decodable {
        public let name: String
        public let dtype: String
        public let shape: [Dimension]?
        public let meaning: String

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case dtype = "dtype"
            case shape = "shape"
            case meaning = "meaning"
        }
    }

    /// The calibration folder's preprocess.toml as the manifest records it.
    public struct Preprocessing: Decodable {
        public let input: String?
        public let size: [Int]
        public let resize: String?
        public let padValue: Int?
        public let layout: String?
        public let color: String?
        public let scale: Double?
        public let mean: [Double]?
        public let std: [Double]?

        enum CodingKeys: String, CodingKey {
            case input = "input"
            case size = "size"
            case resize = "resize"
            case padValue = "pad_value"
            case layout = "layout"
            case color = "color"
            case scale = "scale"
            case mean = "mean"
            case std = "std"
        }
    }

    /// One raw little-endian C-order file of the reference pair.
    public struct ReferenceTensor: Decodable {
        public let name: String
        public let file: String
        public let dtype: String
        public let shape: [Int]

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case file = "file"
            case dtype = "dtype"
            case shape = "shape"
        }
    }

    public struct Reference: Decodable {
        public let inputs: [ReferenceTensor]
        public let outputs: [ReferenceTensor]
        public let byteOrder: String
        public let check: Check

        enum CodingKeys: String, CodingKey {
            case inputs = "inputs"
            case outputs = "outputs"
            case byteOrder = "byte_order"
            case check = "check"
        }
    }

    /// Per output: equal within `equalWithin` of max(|ref|, 1), or cosine >= `cosineMin` (and the same top-1).
    public struct Check: Decodable {
        public let equalWithin: Double
        public let cosineMin: Double?
        public let sameTop1: Bool?

        enum CodingKeys: String, CodingKey {
            case equalWithin = "equal_within"
            case cosineMin = "cosine_min"
            case sameTop1 = "same_top1"
        }
    }

    public struct SourceModel: Decodable {
        public let inputs: [Tensor]

        enum CodingKeys: String, CodingKey {
            case inputs = "inputs"
        }
    }

    public struct Tensor: Decodable {
        public let name: String
        public let dtype: String
        public let shape: [Dimension]?

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case dtype = "dtype"
            case shape = "shape"
        }

        init(name: String, dtype: String, shape: [Dimension]?) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    /// An int, or a symbolic name / null for an open dimension.
    public struct Dimension: Decodable {
        public let value: Int?

        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            value = try? c.decode(Int.self)
        }

        init(_ value: Int?) { self.value = value }
    }

    /// Fixed shapes: {input name: [dims]}; otherwise the source model's input list.
    public enum ShippedInputs: Decodable {
        case fixed([String: [Dimension]])
        case declared([Tensor])

        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let fixed = try? c.decode([String: [Dimension]].self) {
                self = .fixed(fixed)
            } else {
                self = .declared(try c.decode([Tensor].self))
            }
        }
    }

    /// A provider option as the profile wrote it: string, integer or boolean.
    public enum OptionValue: Decodable {
        case text(String)
        case number(Int)
        case flag(Bool)

        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) {
                self = .flag(b)
            } else if let i = try? c.decode(Int.self) {
                self = .number(i)
            } else {
                self = .text(try c.decode(String.self))
            }
        }

        /// ONNX Runtime's provider options are strings; booleans become "1"/"0".
        public var string: String {
            switch self {
            case .text(let s): return s
            case .number(let i): return String(i)
            case .flag(let b): return b ? "1" : "0"
            }
        }
    }

    public static func load(from url: URL) throws -> BundleManifest {
        let manifest = try JSONDecoder().decode(BundleManifest.self, from: Data(contentsOf: url))
        guard manifest.schemaVersion == supportedSchemaVersion else {
            throw BundleError.unsupported("manifest schema_version \(manifest.schemaVersion); this app reads \(supportedSchemaVersion)")
        }
        return manifest
    }

    /// toolchain.onnxruntime: the version that wrote model.ort (the app must link the same one).
    public var onnxruntimeVersion: String? { toolchain["onnxruntime"] }

    public func model(named name: String? = nil) throws -> Model {
        if let name = name {
            guard let m = models.first(where: { $0.name == name }) else {
                throw BundleError.unsupported("no model '\(name)' in the bundle; models: \(models.map(\.name))")
            }
            return m
        }
        guard models.count == 1 else {
            throw BundleError.unsupported("the bundle holds \(models.count) models; pass one's name")
        }
        return models[0]
    }
}

public enum BundleError: Error, CustomStringConvertible {
    case unsupported(String)

    public var description: String {
        switch self {
        case .unsupported(let why): return why
        }
    }
}
