"""The bars an output of each kind is judged against: which tolerance keys apply to which kind, and the
defaults used where a profile's recipe does not set them.

Defaults (every recipe; a profile's ``[quantization.tolerance]`` overrides them per recipe):

* ``class_agreement_min`` 0.95 - same top-1 class as fp32 on >= 95% of the *confident* fp32 decisions
  (issue #13's bar "95% of confident class decisions");
* ``sequence_agreement_min`` 0.95 - identical decoded sequences on >= 95% of them (issue #13's bar);
* ``pixel_agreement_min`` 0.99 - >= 99% of the thresholded mask pixels agree (issue #13's bar);
* ``mask_iou_min`` 0.90 - IoU of the pooled thresholded masks. No issue bar; measured (PP-OCRv5 text
  detector, real photographs and pages): fp32 against itself across optimization levels and OpenVINO
  >= 0.999999 (benchmarks/bench_noise.py); its fp16 artifacts 0.997 on the verification samples and
  >= 0.987 on held-out ones, the int8 candidates that lose text regions 0.37-0.80
  (benchmarks/bench_agreement.py). 0.90 sits between, far above noise;
* ``box_agreement_min`` 0.95 - confident detections matched both ways (same class, IoU >= 0.5): a
  confident detection is a confident class decision with a place, so it gets the class bar;
* ``cosine_min`` - embeddings only; every profile recipe sets it (fp32 'none': 0.9999, where the measured
  fp32-vs-fp32 noise of embeddings in benchmarks/bench_noise.py is 1 - cosine <= 3e-9).

``top1_agreement_min`` (every decision, confident or not) and ``max_accuracy_drop`` (the user's own
metric, ``--eval``) apply only where a profile or the command line sets them.
"""

from __future__ import annotations

KINDS = ("classes", "sequence", "map", "boxes", "embedding")

DEFAULTS: dict[str, float] = {
    "class_agreement_min": 0.95,
    "sequence_agreement_min": 0.95,
    "pixel_agreement_min": 0.99,
    "mask_iou_min": 0.90,
    "box_agreement_min": 0.95,
}

# tolerance key -> (kind it applies to, metric it bounds from below)
BAR_OF: dict[str, tuple[str, str]] = {
    "class_agreement_min": ("classes", "confident_agreement"),
    "top1_agreement_min": ("classes", "top1_agreement"),
    "sequence_agreement_min": ("sequence", "sequence_agreement"),
    "pixel_agreement_min": ("map", "pixel_agreement"),
    "mask_iou_min": ("map", "mask_iou"),
    "box_agreement_min": ("boxes", "box_agreement"),
    "cosine_min": ("embedding", "cosine_min"),
}

# the metric a compare report shows as "the" agreement of an output of each kind
PRIMARY: dict[str, str] = {"classes": "confident_agreement", "sequence": "sequence_agreement",
                           "map": "pixel_agreement", "boxes": "box_agreement", "embedding": "cosine_min"}

MIN_EVIDENCE = 32  # fewer verification samples than this: "weakly verified, n=K"


def bars_for(kind: str, tolerance) -> dict[str, float]:
    """{tolerance key: bar} that apply to an output of ``kind`` under ``tolerance`` (a target.Tolerance)."""
    out = {}
    for key, (k, _) in BAR_OF.items():
        if k != kind:
            continue
        value = getattr(tolerance, key, None)
        if value is None:
            value = DEFAULTS.get(key)
        if value is not None:
            out[key] = float(value)
    return out
