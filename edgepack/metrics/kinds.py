"""What kind of output each model output is: read from the graph (the op that makes it) and the shapes
of the fp32 reference outputs, or said by the user (``--output-kind NAME=KIND``, ``[tool.edgepack]
output_kinds``).

Detection rules (first match; ``N`` = the batch axis, "from X" = the op that makes the output, looking
through Reshape/Flatten/Squeeze/Unsqueeze/Identity/Transpose/Cast):

* integer or bool outputs -> ``classes`` (labels: every element is a decision, compared exactly);
* a sequence of maps (ZipMap) or ``[N,C]``/``[N,C,1,1]`` (C > 1) from Softmax, LogSoftmax, Gemm, MatMul,
  Add or an ai.onnx.ml classifier -> ``classes``;
* ``[N,T,C]`` (T, C > 1) from Softmax/LogSoftmax -> ``sequence`` (greedy CTC, blank 0);
* ``[N,4+C,A]`` or ``[N,A,4+C]`` (A >= 4 (4+C)) from a Concat one of whose inputs comes from a Sigmoid
  -> ``boxes`` (YOLO-style head: cx, cy, w, h, class scores; no objectness column);
* ``[N,1,H,W]`` / ``[N,H,W]`` (H, W > 1) from Sigmoid -> ``map`` (probabilities, threshold 0.5); ``[N,1,H,W]``
  from Conv/ConvTranspose/Resize/Add -> ``map`` (logits, threshold 0);
* anything else -> ``embedding`` (cosine), e.g. hidden states from LayerNormalization, pooled vectors,
  spectrograms. A projection-head embedding ``[N,D]`` from Gemm reads as ``classes``: say
  ``--output-kind NAME=embedding``.

User kinds take options after a colon: ``sequence:blank=K`` (CTC blank index), ``sequence:ctc=0`` (compare
raw argmax paths), ``map:threshold=X``, ``classes:margin=X`` (confidence margin), ``boxes:layout=anchors-first``,
``boxes:objectness=1`` (a column 4 of objectness before the class scores), ``boxes:conf=X``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from .bars import KINDS

PASS_THROUGH = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Cast"}
CLASS_HEADS = {"Softmax", "LogSoftmax", "Gemm", "MatMul", "Add", "ZipMap", "LinearClassifier", "SVMClassifier",
               "TreeEnsembleClassifier", "Normalizer"}
LOGIT_MAP_HEADS = {"Conv", "ConvTranspose", "Resize", "Add"}
OPTIONS = {"sequence": {"blank": int, "ctc": int}, "map": {"threshold": float}, "classes": {"margin": float},
           "boxes": {"layout": str, "objectness": int, "conf": float}, "embedding": {}}
LAYOUTS = ("channels-first", "anchors-first")  # [N,4+C,A] | [N,A,4+C]


@dataclass(frozen=True)
class OutputKind:
    """One output's kind, why, and its options (blank index, threshold, layout ...)."""

    kind: str
    why: str
    options: dict = field(default_factory=dict, hash=False)
    user: bool = False

    def opt(self, key: str, default):
        return self.options.get(key, default)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "from": ("you: " if self.user else "detected: ") + self.why}
        if self.options:
            out["options"] = dict(sorted(self.options.items()))
        return out


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _head(graph, name: str, producers: dict) -> tuple[str | None, object]:
    """The first op that makes ``name`` that is not a pass-through op, and that node."""
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None, None
        if node.op_type not in PASS_THROUGH or not node.input:
            return node.op_type, node
        name = node.input[0]
    return None, None


def _reaches(graph, name: str, op: str, producers: dict, depth: int = 6) -> bool:
    node = producers.get(name)
    if node is None or depth == 0:
        return False
    if node.op_type == op:
        return True
    return any(_reaches(graph, i, op, producers, depth - 1) for i in node.input[:1])


def _shape_str(shape: tuple) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def detect(graph, name: str, sample) -> OutputKind:
    """The kind of output ``name`` of ``graph`` (the fp32 model's main graph), from the op that makes it
    and ``sample`` (its fp32 value on one verification input: an array, or ZipMap's list of dicts)."""
    import numpy as np

    if isinstance(sample, list) and sample and isinstance(sample[0], dict):
        return OutputKind("classes", "a sequence of maps (class probabilities, ZipMap)")
    arr = np.asarray(sample)
    producers = _producers(graph)
    head, node = _head(graph, name, producers)
    s, src = arr.shape, f"{_shape_str(arr.shape)} from {head or 'a graph input or initializer'}"
    if arr.dtype.kind in "iub":
        return OutputKind("classes", f"{src}: integer values are labels, compared exactly")
    core = [d for d in s[1:]]
    if len(s) == 2 and s[1] > 1 or (len(s) == 4 and s[1] > 1 and s[2] == 1 and s[3] == 1):
        if head in CLASS_HEADS:
            return OutputKind("classes", f"{src}: class scores")
    if len(s) == 3 and s[1] > 1 and s[2] > 1:
        if head in ("Softmax", "LogSoftmax"):
            return OutputKind("sequence", f"{src}: per-step class scores (greedy CTC, blank 0)")
        layout = _box_layout(s)
        if head == "Concat" and layout and any(_reaches(graph, i, "Sigmoid", producers) for i in node.input):
            return OutputKind("boxes", f"{src}: YOLO-style head (box + class scores per anchor)", {"layout": layout})
    spatial = (len(s) == 4 and s[1] == 1 and s[2] > 1 and s[3] > 1) or (len(s) == 3 and core[0] > 1 and core[1] > 1)
    if spatial and head == "Sigmoid":
        return OutputKind("map", f"{src}: a probability map")
    if len(s) == 4 and s[1] == 1 and s[2] > 1 and s[3] > 1 and head in LOGIT_MAP_HEADS:
        return OutputKind("map", f"{src}: a logit map (threshold 0)", {"threshold": 0.0})
    return OutputKind("embedding", f"{src}: values compared by cosine")


def _box_layout(shape: tuple) -> str | None:
    a, b = shape[1], shape[2]
    if 5 <= a <= 1004 and b >= 4 * a:
        return "channels-first"
    if 5 <= b <= 1004 and a >= 4 * b:
        return "anchors-first"
    return None


# ---------------------------------------------------------------------------------------------- what users say


def parse_kind(text: str, where: str) -> tuple[str, dict]:
    """``KIND[:key=value,...]`` -> (kind, options); UsageError names ``where``."""
    from .._toml_check import did_you_mean

    kind, _, rest = text.strip().partition(":")
    if kind not in KINDS:
        msg = f"{where}: unknown output kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}"
        raise UsageError(msg)
    options: dict = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        allowed = OPTIONS[kind]
        if not eq or key not in allowed:
            names = ", ".join(allowed) or "none"
            msg = f"{where}: '{part}' is not an option of '{kind}' (options: {names}; e.g. {kind}:{next(iter(allowed), 'x')}=...)"
            raise UsageError(msg)
        try:
            options[key] = allowed[key](value)
        except ValueError:
            msg = f"{where}: option '{key}' of '{kind}' must be a {allowed[key].__name__}, got {value!r}"
            raise UsageError(msg) from None
    if options.get("layout", LAYOUTS[0]) not in LAYOUTS:
        msg = f"{where}: boxes layout must be one of {', '.join(LAYOUTS)}"
        raise UsageError(msg)
    return kind, options


def parse_output_kind_arg(text: str, where: str | None = None) -> tuple[str, str, dict]:
    """``[MODEL:]NAME=KIND[:options]`` -> (NAME or MODEL:NAME, kind, options). Output names may hold ':'
    and the options '=': the split is at the first '=' followed by a kind. Which part is a model stem is
    decided against the models by :func:`resolve`."""
    where = where or f"--output-kind '{text}'"
    for i, ch in enumerate(text):
        if ch == "=" and i and text[i + 1:].split(":", 1)[0].strip() in KINDS:
            kind, options = parse_kind(text[i + 1:], where)
            return text[:i].strip(), kind, options
    head, eq, value = text.partition("=")
    if eq and head:
        parse_kind(value, where)  # names the unknown kind
    msg = f"{where} must look like NAME=KIND or MODEL:NAME=KIND (KIND: {', '.join(KINDS)})"
    raise UsageError(msg)


def resolve(given: list[tuple[str, str, dict, str]], models: dict[str, list[str]]) -> dict[str, dict[str, OutputKind]]:
    """User kinds per model: ``given`` = [(NAME or MODEL:NAME, kind, options, where)], ``models`` = {model
    stem: its output names}. A plain NAME applies to every model with that output; MODEL:NAME to one."""
    out: dict[str, dict[str, OutputKind]] = {m: {} for m in models}
    for key, kind, options, where in given:
        hits = [(m, key) for m, names in models.items() if key in names]
        model, colon, rest = key.partition(":")
        if not hits and colon and model in models and rest in models[model]:
            hits = [(model, rest)]
        if not hits:
            from .._toml_check import did_you_mean

            names = sorted({n for ns in models.values() for n in ns})
            msg = f"{where} names no output of the model(s){did_you_mean(key, names)}; outputs: {', '.join(names)}"
            raise UsageError(msg)
        for m, name in hits:
            out[m][name] = OutputKind(kind, f"{where}", options, user=True)
    return out


def kinds_of(graph, reference: dict, given: dict[str, OutputKind]) -> dict[str, OutputKind]:
    """Every output's kind: the user's where given, else detected from ``graph`` and ``reference`` (the fp32
    outputs on one verification input)."""
    return {name: given.get(name) or detect(graph, name, value) for name, value in reference.items()}
