"""Reports are untrusted input. An earlier ``report.json`` given to ``compare --baseline``, and every
report and measurement given to ``merge``: the fields they are read for are type-checked before any
work, so a wrong-typed or hostile file is one error naming the key instead of an AttributeError, a
division by zero or markup in the merged report."""

from __future__ import annotations

import re
from typing import Any

from .errors import UsageError
from .profile_checks import control_char


def _number(value: Any, positive: bool = False) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    return ok and (value > 0 if positive else True)


def check_baseline(doc: Any, where: str) -> None:
    """An earlier report.json given with ``--baseline``: the fields the comparison reads, type-checked."""

    def fail(key: str, want: str) -> None:
        msg = f"{where}: '{key}' must be {want} (not an edgepack report.json?)"
        raise UsageError(msg)

    if not isinstance(doc, dict):
        fail("<root>", "an object")
    targets = doc.get("targets", {})
    if not isinstance(targets, dict):
        fail("targets", "an object keyed by target")
    for name, row in targets.items():
        key = f"targets.{name}"
        if not isinstance(row, dict):
            fail(key, "an object")
        for k in ("model_bytes", "bundle_bytes"):
            if not _number(row.get(k)):
                fail(f"{key}.{k}", "a number")
        host = row.get("host_latency")
        if host is not None and not (isinstance(host, dict) and _number(host.get("shipped_ms"), positive=True)):
            fail(f"{key}.host_latency", "null or an object with shipped_ms above 0")
        estimates = row.get("estimates", {})
        if not isinstance(estimates, dict):
            fail(f"{key}.estimates", "an object")
        latency = estimates.get("latency_ms")
        if isinstance(latency, dict) and "value" in latency and not _number(latency["value"]):
            fail(f"{key}.estimates.latency_ms.value", "a number")
        accuracy = row.get("accuracy", {})
        if not isinstance(accuracy, dict) or not (accuracy.get("drop") is None or _number(accuracy["drop"])):
            fail(f"{key}.accuracy", "an object whose 'drop' is null or a number")


# ------------------------------------------------------------------ whole reports, for `edgepack merge`

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _Doc:
    """Type checks over one untrusted JSON document; the first failure is one UsageError naming the key."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, want: str):
        msg = f"{self.where}: '{key}' must be {want} (not a report edgepack wrote, or changed since)"
        raise UsageError(msg)

    def obj(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, "an object")
        return value

    def text(self, value: Any, key: str, *, optional: bool = False, limit: int = 4000) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > limit or control_char(value):
            self.fail(key, f"a string (at most {limit} characters, no control characters)")
        return value

    def number(self, value: Any, key: str, *, optional: bool = False, positive: bool = False) -> float | None:
        if value is None and optional:
            return None
        if not _number(value, positive) or value in (float("inf"), float("-inf")):
            self.fail(key, "a finite number" + (" above 0" if positive else ""))
        return value

    def estimate(self, value: Any, key: str) -> None:
        if value is None:
            return
        self.obj(value, key)
        if "value" in value or "error" not in value:
            for part in ("value", "low", "high"):
                self.number(value.get(part), f"{key}.{part}")
        else:
            self.text(value.get("error"), f"{key}.error")


def _model_digests(d: _Doc, models: Any, key: str) -> None:
    """``models``: a non-empty list of {file, sha256} (a report's and a measurement's source models)."""
    if not isinstance(models, list) or not models:
        d.fail(key, "a non-empty list")
    for i, x in enumerate(models):
        d.obj(x, f"{key}[{i}]")
        d.text(x.get("file"), f"{key}[{i}].file", limit=500)
        if not isinstance(x.get("sha256"), str) or not _HEX64.match(x["sha256"]):
            d.fail(f"{key}[{i}].sha256", "64 hexadecimal digits")


def _check_row(d: _Doc, name: str, row: Any) -> None:
    key = f"targets.{name}"
    d.obj(row, key)
    if row.get("target") != name:
        d.fail(f"{key}.target", f"'{name}'")
    for k in ("engine", "provider", "why", "bundle"):
        d.text(row.get(k), f"{key}.{k}")
    d.text(row.get("device"), f"{key}.device", optional=True)
    recipes = d.obj(row.get("recipes"), f"{key}.recipes")
    for m, r in recipes.items():
        d.text(m, f"{key}.recipes (a model name)")
        d.text(r, f"{key}.recipes.{m}", optional=True)
    for k in ("model_bytes", "bundle_bytes"):
        d.number(row.get(k), f"{key}.{k}")
    size = d.obj(row.get("size"), f"{key}.size")
    for k in ("model_bytes", "runtime_bytes", "total_bytes"):
        d.number(size.get(k), f"{key}.size.{k}")
    d.number(size.get("app_download_bytes"), f"{key}.size.app_download_bytes", optional=True)
    for k in ("runtime", "includes"):
        d.text(size.get(k), f"{key}.size.{k}")
    cov = d.obj(row.get("coverage"), f"{key}.coverage")
    for k in ("nodes_on_accelerator", "nodes_total", "partitions", "fraction"):
        d.number(cov.get(k), f"{key}.coverage.{k}")
    acc = d.obj(row.get("accuracy"), f"{key}.accuracy")
    for k in ("cosine_min", "top1_agreement", "drop"):
        d.number(acc.get(k), f"{key}.accuracy.{k}", optional=True)
    d.text(acc.get("drop_basis"), f"{key}.accuracy.drop_basis")
    host = row.get("host_latency")
    if host is not None:
        d.obj(host, f"{key}.host_latency")
        d.number(host.get("fp32_ms"), f"{key}.host_latency.fp32_ms", positive=True)
        d.number(host.get("shipped_ms"), f"{key}.host_latency.shipped_ms", positive=True)
        d.number(host.get("fp32_engine_ms"), f"{key}.host_latency.fp32_engine_ms", optional=True)
        d.text(host.get("timing"), f"{key}.host_latency.timing", optional=True)
        for k, v in d.obj(host.get("what") or {}, f"{key}.host_latency.what").items():
            d.text(v, f"{key}.host_latency.what.{k}")
    est = d.obj(row.get("estimates") or {}, f"{key}.estimates")
    d.estimate(est.get("latency_ms"), f"{key}.estimates.latency_ms")
    d.estimate(est.get("energy"), f"{key}.estimates.energy")
    if isinstance(est.get("energy"), dict):
        d.estimate(est["energy"].get("battery_pct_per_hour"), f"{key}.estimates.energy.battery_pct_per_hour")
    fp32 = row.get("estimates_fp32")
    if fp32 is not None:
        d.obj(fp32, f"{key}.estimates_fp32")
        d.estimate(fp32.get("latency_ms"), f"{key}.estimates_fp32.latency_ms")
        d.estimate(fp32.get("energy"), f"{key}.estimates_fp32.energy")
    figures = d.obj(row.get("budget_figures"), f"{key}.budget_figures")
    for k, v in figures.items():
        if not (isinstance(v, list) and len(v) == 2):
            d.fail(f"{key}.budget_figures.{k}", "[figure or null, basis]")
        d.number(v[0], f"{key}.budget_figures.{k}[0]", optional=True)
        d.text(v[1], f"{key}.budget_figures.{k}[1]")


def check_report(doc: Any, where: str) -> dict:
    """A compare report given to ``merge``: every field merge and the renderers read, type-checked."""
    d = _Doc(where)
    d.obj(doc, "<root>")
    version = doc.get("report_version")
    if version != 2:
        msg = (f"{where}: report_version {str(version)[:20]}; merge reads version 2 reports (made by this edgepack's "
               "compare): make it again with this edgepack")
        raise UsageError(msg)
    if doc.get("merged_from"):
        msg = f"{where} is a merged report; merge the job reports it was made from (its merged_from lists them)"
        raise UsageError(msg)
    _model_digests(d, doc.get("models"), "models")
    toolchain = d.obj(doc.get("toolchain"), "toolchain")
    for k, v in toolchain.items():
        d.text(v, f"toolchain.{k}", limit=200)
    for k in ("edgepack", "onnxruntime"):
        if k not in toolchain:
            d.fail(f"toolchain.{k}", "a version string")
    for k, v in d.obj(doc.get("host"), "host").items():
        d.text(v, f"host.{k}", limit=500)
    targets = d.obj(doc.get("targets"), "targets")
    for name, row in targets.items():
        d.text(name, "targets (a target name)", limit=200)
        _check_row(d, name, row)
    for name, why in d.obj(doc.get("failed_targets") or {}, "failed_targets").items():
        d.text(name, "failed_targets (a target name)", limit=200)
        d.text(why, f"failed_targets.{name}")
    failures = doc.get("failures") or []
    if not isinstance(failures, list):
        d.fail("failures", "a list")
    for i, f in enumerate(failures):
        for k in ("target", "stage", "reason"):
            d.text(d.obj(f, f"failures[{i}]").get(k), f"failures[{i}].{k}")
    source = doc.get("source")
    if source is not None:
        d.obj(source, "source")
        d.number(source.get("bytes"), "source.bytes")
        for i, m in enumerate(source.get("models") or []):
            d.text(d.obj(m, f"source.models[{i}]").get("file"), f"source.models[{i}].file", limit=500)
        host = source.get("host_latency")
        if host is not None:
            d.number(d.obj(host, "source.host_latency").get("median_ms"), "source.host_latency.median_ms")
    d.number(doc.get("build_seconds", 0), "build_seconds")
    d.number(doc.get("per_hour"), "per_hour", optional=True)
    return doc


def check_measurement(doc: Any, where: str) -> dict:
    """A ``verify --measure --json`` output given to ``merge``: the measurement's fields, type-checked."""
    d = _Doc(where)
    d.obj(doc, "<root>")
    m = d.obj(doc.get("measurement"), "measurement")
    if m.get("measurement_version") != 1:
        d.fail("measurement.measurement_version", "1")
    d.text(m.get("target"), "measurement.target", limit=200)
    d.text(m.get("device"), "measurement.device", optional=True)
    _model_digests(d, m.get("models"), "measurement.models")
    for k, v in d.obj(m.get("machine"), "measurement.machine").items():
        d.text(v, f"measurement.machine.{k}", limit=500)
    for k in ("runtime", "provider", "requested"):
        d.text(m.get(k), f"measurement.{k}", limit=200)
    d.text(m.get("note"), "measurement.note", optional=True)
    lat = d.obj(m.get("latency"), "measurement.latency")
    for k in ("median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"):
        d.number(lat.get(k), f"measurement.latency.{k}", positive=True)
    for k in ("runs", "threads"):
        if not (isinstance(lat.get(k), int) and not isinstance(lat.get(k), bool) and lat[k] >= 0):
            d.fail(f"measurement.latency.{k}", "a whole number")
    checks = m.get("reference_check")
    if not isinstance(checks, list):
        d.fail("measurement.reference_check", "a list of lines")
    for i, c in enumerate(checks):
        d.text(c, f"measurement.reference_check[{i}]")
    est = m.get("estimated")
    if est is not None:
        d.estimate(d.obj(est, "measurement.estimated").get("latency_ms"), "measurement.estimated.latency_ms")
    return doc
