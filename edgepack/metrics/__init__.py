"""Metrics that fit each output: what kind of output it is (:mod:`.kinds`), how a candidate's outputs
are compared with the fp32 original's for that kind (:mod:`.measure`, :mod:`.boxes`), and the bars
they are judged against (:mod:`.bars`). The one judgement that uses them is :mod:`edgepack.judge`.

Light on import: :mod:`.bars` is read by the profile loader, which must not import numpy or onnx.
"""
