import EdgepackSample
import SwiftUI

/// Loads the bundle folder "bundle" (a folder reference in the app target), runs it, shows the result.
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
            let runner = try BundleRunner(directory: dir)
            let outcome = try runner.run()
            let m = runner.manifest
            return ([
                "\(m.target.name): \(runner.model.artifact)",
                "provider: \(m.runtime.executionProvider) \((m.runtime.providerOptions ?? [:]).mapValues(\.string).sorted(by: { $0.key < $1.key }))",
                "bundle written by onnxruntime \(m.onnxruntimeVersion ?? "?")",
                "output \(outcome.outputName): shape \(outcome.shape)",
                "predicted class: \(outcome.predictedClass)",
                String(format: "latency: median %.3f ms", outcome.medianMilliseconds),
            ] + runner.notes.map { "note: \($0)" }).joined(separator: "\n")
        } catch {
            return "error: \(error)"
        }
    }
}
