"""Running models on this host: onnxruntime sessions (their options built in one place), runs,
interleaved timing, the host's CPU name and memory. OpenVINO's runtime helpers live with its
backend (``edgepack.backends.openvino.run``); both time with :mod:`.timing`."""
