"""The data a build runs on: calibration samples (quantization data; the device micro-benchmarks
are ``edgepack calibrate``, in :mod:`edgepack.estimate.calibrate`), images turned into samples,
generated inputs, and the per-model sample sets shared by every target."""
