#if canImport(EdgepackSample)
import EdgepackSample // Swift Package Manager route: the local package; with CocoaPods the files are in the app target
#endif
import SwiftUI

/// Opens the bundle folder "bundle" (a folder reference in the app target) once, runs its reference input,
/// checks the outputs on this first run, and shows every output as the manifest describes it.
struct ContentView: View {
    @State private var report = "loading the bundle..."

    var body: some View {
        ScrollView {
            Text(report).font(.system(.body, design: .monospaced)).padding()
        }
        .task { report = await Task.detached(priority: .userInitiated) { Self.runBundle() }.value }
    }

    static func runBundle() -> String {
        guard let dir = Bundle.main.url(forResource: "bundle", withExtension: nil) else {
            return "error: add the edgepack bundle folder to the app as a folder reference named 'bundle'"
        }
        do {
            let runner = try BundleRunner.shared(directory: dir) // one session for the app's lifetime
            let outcome = try runner.run(try runner.referenceInputs())
            let m = runner.manifest
            var lines = [
                "\(m.target.name): \(runner.model.artifact)",
                "provider: \(m.runtime.executionProvider) \((m.runtime.providerOptions ?? [:]).mapValues(\.string).sorted(by: { $0.key < $1.key }))",
                "bundle written by onnxruntime \(m.onnxruntimeVersion ?? "?")",
                "reference check (first run): \(outcome.referenceCheck)",
            ]
            if let p = runner.model.preprocessing {
                lines.append("preprocessing: \(p.resize ?? "stretch") \(p.size), \(p.color ?? "RGB"), \(p.layout ?? "NCHW"), scale \(p.scale ?? 1.0 / 255)")
            } else {
                lines.append("preprocessing: none recorded (the model takes raw tensors)")
            }
            for spec in runner.model.outputs ?? [] {
                guard let out = outcome.outputs[spec.name] else { continue }
                lines.append("output \(spec.name): \(spec.dtype) \(out.shape) - \(spec.meaning)")
                if out.shape.count == 2, out.shape[1] > 1, !out.values.isEmpty {
                    let best = (0..<out.shape[1]).max(by: { out.values[$0] < out.values[$1] }) ?? -1
                    lines.append("  predicted class (sample 0): \(best)")
                }
            }
            lines.append(String(format: "latency: median %.3f ms", outcome.medianMilliseconds))
            return (lines + runner.notes.map { "note: \($0)" }).joined(separator: "\n")
        } catch {
            return "error: \(error)"
        }
    }
}
