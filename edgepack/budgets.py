"""CI budgets: parse them (flags, ``--budget T:key=value``, ``[tool.edgepack]``), check a compare report.

Budget keys and what they are checked against (each row of a compare report):

* ``max-bundle-mb``: the bundle's model files plus the runtime the target ships with - the minimal
  onnxruntime build's estimate, or the stock runtime's libraries where there is no minimal build
  (OpenVINO) - like for like across targets (MB = 10^6 bytes);
* ``max-latency-ms``: the device latency estimate's value; the host measurement when a target has no
  estimate (the result says which);
* ``max-accuracy-drop``: 1 - top-1 agreement with the fp32 model for classifier outputs, else
  1 - the lowest cosine similarity, worst output;
* ``max-battery-pct-per-hour``: the battery estimate at the requested rate (phones only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._toml_check import did_you_mean
from .errors import UsageError

KEYS = ("max-bundle-mb", "max-latency-ms", "max-accuracy-drop", "max-battery-pct-per-hour")


@dataclass(frozen=True)
class Budget:
    key: str
    limit: float
    target: str | None  # None: every target
    source: str  # "--max-bundle-mb", "--budget", "pyproject.toml [tool.edgepack]"


def _number(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        msg = f"{where}: budget '{key}' must be a number, got {value!r}"
        raise UsageError(msg)
    try:
        number = float(value)
    except ValueError as exc:
        msg = f"{where}: budget '{key}' must be a number, got {value!r}"
        raise UsageError(msg) from exc
    if not number >= 0:
        msg = f"{where}: budget '{key}' must be zero or more, got {value!r}"
        raise UsageError(msg)
    return number


def _key(key: str, where: str) -> str:
    if key not in KEYS:
        msg = f"{where}: unknown budget '{key}'{did_you_mean(key, KEYS)}; budgets: {', '.join(KEYS)}"
        raise UsageError(msg)
    return key


def parse_budget_arg(text: str, targets: list[str]) -> Budget:
    """``android-nnapi:max-bundle-mb=8`` (or ``max-bundle-mb=8`` for every target)."""
    where = f"--budget '{text}'"
    head, sep, value = text.partition("=")
    if not sep:
        msg = f"{where} must look like TARGET:KEY=VALUE, e.g. android-nnapi:max-bundle-mb=8"
        raise UsageError(msg)
    target, colon, key = head.rpartition(":")
    if colon and target not in targets:
        msg = f"{where} names target '{target}'{did_you_mean(target, targets)}, which is not being compared"
        raise UsageError(msg)
    key = _key(key, where)
    return Budget(key, _number(key, value, where), target or None, "--budget")


def from_pyproject(path: Path, targets: list[str]) -> list[Budget]:
    """Budgets from a ``[tool.edgepack]`` table (keys as above; per target in ``[tool.edgepack.budgets.T]``)."""
    if not path.is_file():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        msg = f"{path.name}: invalid TOML: {exc if not isinstance(exc, RecursionError) else 'nested too deeply'}"
        raise UsageError(msg) from exc
    tool = data.get("tool", {})
    table = tool.get("edgepack", {}) if isinstance(tool, dict) else None
    where = f"{path.name} [tool.edgepack]"
    if not isinstance(table, dict):  # untrusted file: `tool = 1` or `edgepack = "x"` is one clear error
        msg = f"{where} must be a table of budgets (e.g. max-bundle-mb = 8)"
        raise UsageError(msg)
    out = []
    for key, value in table.items():
        if key in ("eval", "output_kinds"):  # the judgement's settings (edgepack.judging), not budgets
            continue
        if key == "budgets":
            if not isinstance(value, dict):
                msg = f"{where}: 'budgets' must be a table of targets"
                raise UsageError(msg)
            for target, limits in value.items():
                if target not in targets:
                    continue  # budgets for targets not compared this time
                if not isinstance(limits, dict):
                    msg = f"{where}: 'budgets.{target}' must be a table"
                    raise UsageError(msg)
                for k, v in limits.items():
                    out.append(Budget(_key(k, f"{where} budgets.{target}"), _number(k, v, where), target, where))
            continue
        out.append(Budget(_key(key, where), _number(key, value, where), None, where))
    return out


def effective(budgets: list[Budget], targets: list[str]) -> dict[str, dict[str, Budget]]:
    """Per target and key, the budget that applies: a per-target budget beats a global one, and a
    later source (flags after pyproject.toml) beats an earlier one."""
    out: dict[str, dict[str, Budget]] = {t: {} for t in targets}
    for b in budgets:
        for t in ([b.target] if b.target else targets):
            current = out[t].get(b.key)
            if current is None or not (current.target and not b.target):
                out[t][b.key] = b
    return out


def check(rows: dict[str, dict], budgets: dict[str, dict[str, Budget]]) -> list[dict]:
    """One result per (target, budget): the figure, the limit, passed, and by how much."""
    results = []
    for target, by_key in budgets.items():
        row = rows.get(target)
        if row is None:
            continue
        for key, b in sorted(by_key.items()):
            figure, basis = row["budget_figures"].get(key, (None, None))
            if figure is None:
                results.append({"target": target, "budget": key, "limit": b.limit, "value": None, "passed": None,
                                "basis": basis or "no figure for this target", "source": b.source})
                continue
            passed = figure <= b.limit
            results.append({"target": target, "budget": key, "limit": b.limit, "value": round(figure, 4),
                            "passed": passed, "over_by": None if passed else round(figure - b.limit, 4),
                            "basis": basis, "source": b.source})
    return results


def collect(targets: list[str], *, config: Path | None = None, every: dict[str, Any] | None = None,
            per_target: list[str] | dict[str, dict[str, Any]] | None = None) -> list[Budget]:
    """The budgets of one run, in the order they apply (a later one beats an earlier one):
    ``config``'s ``[tool.edgepack]`` table, then ``every`` ({key: limit} for every target, the
    ``--max-*`` flags), then ``per_target`` (``--budget T:KEY=X`` strings, or {target: {key: limit}})."""
    out = from_pyproject(Path(config), targets) if config is not None else []
    for key, value in (every or {}).items():
        if value is not None:
            out.append(Budget(_key(key, f"--{key}"), _number(key, value, f"--{key}"), None, f"--{key}"))
    if isinstance(per_target, dict):
        for target, limits in per_target.items():
            if target not in targets:
                msg = f"budget for target '{target}'{did_you_mean(str(target), targets)}, which is not being compared"
                raise UsageError(msg)
            if not isinstance(limits, dict):
                msg = f"budgets for '{target}' must be a mapping of budget to limit"
                raise UsageError(msg)
            for key, value in limits.items():
                out.append(Budget(_key(key, f"budget {target}"), _number(key, value, f"budget {target}"), target,
                                  "--budget"))
    else:
        out += [parse_budget_arg(b, targets) for b in per_target or []]
    return out
