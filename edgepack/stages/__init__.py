"""The stage functions of a build, in the order of ``edgepack.build.stages_for``: prepare, quantize
(the one recipe selector), convert, verify (the shipped model against fp32, while building), package
(``reduce`` for ONNX Runtime) and estimate. Each is ``stage(ctx, decisions) -> ctx``; what is
engine-specific they ask the target's backend."""
