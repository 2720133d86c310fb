"""An earlier ``report.json`` given to ``compare --baseline`` is untrusted: the fields the comparison
reads are type-checked before any work, so a wrong-typed report is one error naming the key instead
of an AttributeError or a division by zero after the bundles were built."""

from __future__ import annotations

from typing import Any

from .errors import UsageError


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
