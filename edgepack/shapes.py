"""Input shapes: parse ``--shape [MODEL:]NAME=1x3x224x224``, give each model its own, decide every
dynamic dimension, fix them in a model.

``NAME=DIMS`` applies to every model of the build that has an input ``NAME``; ``MODEL:NAME=DIMS``
only to the model whose file stem is ``MODEL`` (``det:x=1x3x640x640`` for ``det.onnx``). Input names
may hold ``:`` themselves (tf2onnx's ``serving_default_input_2:0``): a key is read as whichever of the
two it can be for the models given, and one that could be both is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ._toml_check import did_you_mean
from .errors import ShapeError
from .model import ModelInfo

MAX_DIM = 2**31 - 1


def parse_shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """``images=1x3x640x640`` -> ("images", (1, 3, 640, 640))."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims:
        msg = f"--shape '{text}' must look like NAME=1x3x224x224"
        raise ShapeError(msg)
    out = []
    for part in dims.lower().replace(",", "x").split("x"):
        if not part.strip().isdigit():
            msg = f"--shape '{text}': dimension '{part}' is not a positive whole number"
            raise ShapeError(msg)
        value = int(part)
        if value < 1 or value > MAX_DIM:
            msg = f"--shape '{text}': dimension {value} must be between 1 and {MAX_DIM}"
            raise ShapeError(msg)
        out.append(value)
    return name, tuple(out)


def parse_shape_args(args: list[str] | None) -> dict[str, tuple[int, ...]]:
    """{key: dims} with keys as written (``NAME`` or ``MODEL:NAME``); see :func:`shapes_per_model`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for arg in args or []:
        name, dims = parse_shape_arg(arg)
        if name in shapes:
            msg = f"--shape given twice for '{name}'"
            raise ShapeError(msg)
        shapes[name] = dims
    return shapes


@dataclass(frozen=True)
class ShapeTarget:
    """What --shape keys are resolved against: one model's file stem, file name and input names."""

    stem: str
    file: str
    inputs: tuple[str, ...]


def _readings(key: str, models: list[ShapeTarget]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(plain, qualified): the (model index, input) pairs ``key`` names as ``NAME`` and as ``MODEL:NAME``."""
    plain = [(i, key) for i, m in enumerate(models) if key in m.inputs]
    qualified = []
    for pos, ch in enumerate(key):
        if ch != ":":
            continue
        stem, name = key[:pos], key[pos + 1:]
        qualified += [(i, name) for i, m in enumerate(models) if m.stem == stem and name in m.inputs]
    return plain, qualified


def _unknown(key: str, models: list[ShapeTarget]) -> ShapeError:
    if len(models) == 1:
        names = list(models[0].inputs)
        msg = f"--shape names unknown input '{key}'{did_you_mean(key, names)}; the model's inputs are: {', '.join(names)}"
        return ShapeError(msg)
    spellings = [n for m in models for n in m.inputs] + [f"{m.stem}:{n}" for m in models for n in m.inputs]
    listed = "; ".join(f"{m.file}: {', '.join(m.inputs)}" for m in models)
    stem = key.split(":", 1)[0] if ":" in key else None
    if stem is not None and stem not in {m.stem for m in models} and not any(key in m.inputs for m in models):
        why = f"'{stem}' is not the file stem of a model given ({', '.join(m.stem for m in models)})"
    else:
        why = "no model given has that input"
    msg = f"--shape '{key}': {why}{did_you_mean(key, spellings)}; inputs: {listed}"
    return ShapeError(msg)


def shapes_per_model(given: dict[str, tuple[int, ...]], models: list[ShapeTarget]) -> list[dict[str, tuple[int, ...]]]:
    """Each model's {input: dims} from --shape keys ``NAME`` (every model with that input) and
    ``MODEL:NAME`` (that model only). A key that names nothing, or could be read both ways, or two
    keys giving one model's input different shapes: one ShapeError naming them."""
    out: list[dict[str, tuple[int, ...]]] = [{} for _ in models]
    source: list[dict[str, str]] = [{} for _ in models]
    for key, dims in given.items():
        plain, qualified = _readings(key, models)
        if plain and qualified or len(qualified) > 1:
            msg = (f"--shape '{key}' is ambiguous: it is an input name of "
                   f"{', '.join(sorted({models[i].file for i, _ in plain})) or 'no model'} and also reads as MODEL:INPUT "
                   f"for {', '.join(sorted({f'{models[i].file} input {n!r}' for i, n in qualified}))}; rename a file")
            raise ShapeError(msg)
        if not plain and not qualified:
            raise _unknown(key, models)
        for i, name in plain or qualified:
            if name in out[i] and out[i][name] != dims:
                msg = (f"--shape {source[i][name]}={_fmt(out[i][name])} and --shape {key}={_fmt(dims)} give input "
                       f"'{name}' of {models[i].file} two shapes; keep one")
                raise ShapeError(msg)
            out[i][name] = dims
            source[i][name] = key
    return out


@dataclass(frozen=True)
class ShapePlan:
    """The shape every input gets, and why."""

    shapes: dict[str, tuple[int | str | None, ...]]
    decisions: tuple[str, ...]
    undecided: tuple[str, ...]  # "input 'images' dim 2 ('height')" for dims left dynamic

    @property
    def fixed(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in self.shapes.items() if all(isinstance(d, int) for d in v)}  # type: ignore[misc]

    @property
    def all_fixed(self) -> bool:
        return not self.undecided


def plan_shapes(info: ModelInfo, given: dict[str, tuple[int, ...]], default_batch: int = 1) -> ShapePlan:
    """Decide input shapes from --shape, the model's static dims, and a default batch for dim 0."""
    names = [i.name for i in info.inputs]
    for name in given:
        if name not in names:
            msg = f"--shape names unknown input '{name}'{did_you_mean(name, names)}; the model's inputs are: {', '.join(names)}"
            raise ShapeError(msg)
    shapes: dict[str, tuple[int | str | None, ...]] = {}
    decisions: list[str] = []
    undecided: list[str] = []
    for spec in info.inputs:
        if spec.shape is None:
            if spec.name in given:
                shapes[spec.name] = given[spec.name]
                decisions.append(f"input '{spec.name}' has no declared shape; using --shape {_fmt(given[spec.name])}")
            else:
                undecided.append(f"input '{spec.name}' (no declared shape)")
            continue
        if spec.name in given:
            dims = given[spec.name]
            if len(dims) != len(spec.shape):
                msg = f"--shape {spec.name}={_fmt(dims)} has rank {len(dims)} but the model's input has rank {len(spec.shape)} {_fmt(spec.shape)}"
                raise ShapeError(msg)
            for i, (want, have) in enumerate(zip(dims, spec.shape)):
                if isinstance(have, int) and have != want:
                    msg = f"--shape {spec.name}={_fmt(dims)}: dimension {i} is fixed to {have} in the model"
                    raise ShapeError(msg)
            shapes[spec.name] = dims
            if spec.dynamic_dims:
                decisions.append(f"input '{spec.name}' fixed to {_fmt(dims)} from --shape")
            continue
        dims_out: list[int | str | None] = list(spec.shape)
        for i in spec.dynamic_dims:
            label = spec.shape[i] if isinstance(spec.shape[i], str) else "?"
            if i == 0 and len(spec.shape) >= 2:
                dims_out[i] = default_batch
                decisions.append(f"input '{spec.name}' dim 0 ('{label}') set to batch {default_batch} (target default)")
            else:
                undecided.append(f"input '{spec.name}' dim {i} ('{label}')")
        shapes[spec.name] = tuple(dims_out)
    return ShapePlan(shapes=shapes, decisions=tuple(decisions), undecided=tuple(undecided))


def require_fixed(plan: ShapePlan, info: ModelInfo, why: str) -> dict[str, tuple[int, ...]]:
    """Every input shape, all fixed; else a ShapeError that names the dims and how to pass them."""
    if plan.undecided:
        example = []
        for spec in info.inputs:
            if not any(u.startswith(f"input '{spec.name}' ") for u in plan.undecided):
                continue
            dims = plan.shapes.get(spec.name, spec.shape or ())
            example.append(f"--shape {spec.name}=" + "x".join(str(d) if isinstance(d, int) else "N" for d in dims))
        msg = f"{why}: cannot decide {', '.join(plan.undecided)}; pass it with {' '.join(example)}"
        raise ShapeError(msg)
    return plan.fixed


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have the given fixed shapes.

    Each input dim is set directly. A symbolic dim name given one value everywhere is replaced in
    the rest of the graph too; a name given different values (exporters reuse '?' for H and W) is
    cleared there instead, so shape inference recomputes it.
    """
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    from .model import iter_graphs

    out = onnx.ModelProto()
    out.CopyFrom(model)
    values: dict[str, set[int]] = {}
    for inp in out.graph.input:
        if inp.name not in shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        want = shapes[inp.name]
        if len(dims) != len(want):
            msg = f"input '{inp.name}' has rank {len(dims)}, the shape given has rank {len(want)}"
            raise ShapeError(msg)
        for d, v in zip(dims, want):
            if d.HasField("dim_param") and d.dim_param:
                values.setdefault(d.dim_param, set()).add(int(v))
            d.Clear()
            d.dim_value = int(v)
    given = set(shapes)
    for g in iter_graphs(out.graph):
        for vi in [*g.value_info, *g.output, *(i for i in g.input if i.name not in given)]:
            if not vi.type.HasField("tensor_type"):
                continue
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in values:
                    vals = values[d.dim_param]
                    name = d.dim_param
                    d.Clear()
                    if len(vals) == 1:
                        d.dim_value = next(iter(vals))
                    else:
                        d.dim_param = f"unk_{name}"
    # like onnx_model_utils.fix_output_shapes, minus its in-memory check_model (which cannot see external data)
    try:
        inferred = onnx.shape_inference.infer_shapes(out)
    except Exception:  # noqa: BLE001 - outputs keep their symbolic dims; the runtime still infers them
        return out
    for o, new in zip(out.graph.output, inferred.graph.output):
        if not is_fixed_size_tensor(o) and is_fixed_size_tensor(new):
            o.type.tensor_type.shape.CopyFrom(new.type.tensor_type.shape)
    return out


def _fmt(dims) -> str:
    return "x".join(str(d) if d is not None else "?" for d in dims)
