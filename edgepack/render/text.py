"""Console text for ``inspect`` and ``build``. (JSON is the dict itself; the compare reports are
:mod:`edgepack.render.report`.)"""

from __future__ import annotations


def _fmt_num(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def fmt_count(x: float, unit: str) -> str:
    """``1.20 GFLOPs``, ``8 FLOPs``, ``0 FLOPs``: a count with an SI prefix and its unit, spaced."""
    text = _fmt_num(x)
    if text[-1].isalpha():
        return f"{text[:-1]} {text[-1]}{unit}"
    return f"{text} {unit}"


def _fmt_dims(shape) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def print_inspect(report: dict) -> None:
    m = report["model"]
    print(f"model     {m['name']}  ({m['file_bytes']:,} bytes, sha256 {m['sha256'][:12]}, producer {m['producer'] or '?'})")
    print(f"opsets    " + ", ".join(f"{k} {v}" for k, v in m["opsets"].items()) + f"   IR {m['ir_version']}")
    for kind in ("inputs", "outputs"):
        for t in m[kind]:
            dyn = [str(d) for d in (t["shape"] or []) if not isinstance(d, int)]
            extra = f"  dynamic: {', '.join(dyn)}" if dyn else ""
            print(f"{kind[:-1]:<9} {t['name']}: {t['dtype']} {_fmt_dims(t['shape'])}{extra}")
    cf = ", ".join(f"{k} x{v}" for k, v in m["control_flow"].items())
    print(f"nodes     {m['nodes']} in the main graph, {m['nodes_total']} in all" + (f" (control flow: {cf})" if cf else ""))
    print(f"params    {m['params']:,}  weights {m['weight_bytes']:,} bytes (" +
          ", ".join(f"{k} {v:,}" for k, v in m["weight_bytes_by_dtype"].items()) + ")")
    top = list(m["op_histogram"].items())
    print("ops       " + ", ".join(f"{k} {v}" for k, v in top[:12]) + (f", ... ({len(top)} kinds)" if len(top) > 12 else ""))
    w = report["work"]
    shapes = report["shapes"]
    basis = ", ".join(f"{k}={_fmt_dims(v)}" for k, v in shapes["used_for_flops"].items())
    none = " (no node with countable arithmetic)" if not w["total_flops"] else ""
    print(f"work      {fmt_count(w['total_flops'], 'FLOPs')} ({fmt_count(w['total_macs'], 'MACs')}){none} at {basis}")
    if w["flops_by_class"]:
        print("          by class: " + ", ".join(f"{k} {_fmt_num(v)}" for k, v in w["flops_by_class"].items()))
    if w["nodes_with_unknown_shapes"]:
        print(f"          {w['nodes_with_unknown_shapes']} node(s) have unknown shapes and are not counted; pass --shape to fix them")
    for name, t in report["targets"].items():
        print()
        print(f"target {name}  ({t['profile']['engine']} / {t['profile']['provider']}, shapes {t['profile']['shape_policy']})")
        for c in t["coverage"]:
            if not c["available"]:
                print(f"  {c['scenario']:<26} unavailable: {'; '.join(c['notes'])}")
                continue
            sizes = ", ".join(str(s) for s in c["partition_sizes"][:8]) + (", ..." if len(c["partition_sizes"]) > 8 else "")
            print(f"  {c['scenario']:<26} {c['nodes_supported']}/{c['nodes_total']} nodes ({100 * c['fraction']:.1f}%) "
                  f"in {c['partitions']} partition(s) [{sizes}]")
            for u in c["unsupported"]:
                ops = ", ".join(f"{k} x{v}" for k, v in u["ops"].items())
                print(f"  {'':<26}   - {u['reason']}: {u['nodes']} node(s) ({ops}) -> {u['remedy']}")
            for note in c["notes"]:
                print(f"  {'':<26}   note: {note}")
        for step in t["prepare"]:
            print(f"  prepare: {step}")
        est = t.get("estimates") or {}
        if est.get("available"):
            lat, size, energy = est["latency_ms"], est["size"], est["energy"]
            print(f"  estimated (fp32, before quantization): latency {lat['value']:.3g} ms ({lat['low']:.3g}-{lat['high']:.3g}); "
                  f"app size +{size['value'] / 1e6:.2f} MB ({size['low'] / 1e6:.2f}-{size['high'] / 1e6:.2f}); "
                  f"energy {energy['value']:.3g} mJ/inference ({energy['low']:.3g}-{energy['high']:.3g})")
            if "battery_pct_per_hour" in energy:
                b = energy["battery_pct_per_hour"]
                print(f"  estimated battery at {energy['per_hour']:g} inferences/hour: {b['value']:.3g}% per hour "
                      f"({b['low']:.3g}-{b['high']:.3g})")
            if "average_w" in energy:
                w = energy["average_w"]
                print(f"  estimated power at {energy['per_hour']:g} inferences/hour: {w['value']:.3g} W "
                      f"({w['low']:.3g}-{w['high']:.3g})")
            print(f"  method: {lat['method']}")
        elif est:
            print(f"  estimates: not available ({est['why']})")


def print_build(results) -> None:
    for r in results:
        doc = r.manifest
        measured = r.measurements.get("host_latency", {})
        print(f"{r.target}: {r.bundle}")
        for m in doc["models"]:
            q = m["quantization"]
            cov = m["coverage"]
            # the artifact and the files shipped beside it (OpenVINO's .bin beside model.xml)
            stem = m["artifact"].rsplit(".", 1)[0]
            parts = {m["artifact"], *(f for f in r.model_files if f.startswith(stem + "."))}
            art = {"bytes": sum(a["bytes"] for a in doc["artifacts"] if a["path"] in parts)}
            shown = " + ".join(sorted(parts, key=lambda f: f != m["artifact"]))
            print(f"  {shown:<18} {q['recipe']:<13} {art['bytes']:>10,} bytes (fp32 source {m['source_model']['bytes']:,})")
            print(f"  {'':<18} coverage {cov['nodes_on_accelerator']}/{cov['nodes_total']} nodes in {cov['partitions']} partition(s)")
            print(f"  {'':<18} {verification_line(m['verification'])}")
            lat = measured.get(m["name"])
            if lat:
                print(f"  {'':<18} measured on this host (fp32: onnxruntime CPU; shipped: {r.host_runtime}; "
                      f"{lat['shipped']['threads']} thread): fp32 {lat['fp32_original']['median_ms']:.3f} ms, "
                      f"shipped {lat['shipped']['median_ms']:.3f} ms (median)")
        several = len(doc["models"]) > 1  # then a note keeps the model's name
        for d in doc["recipe"]["decisions"]:
            if d.startswith("quantize: ") and ("skipped" in d or "dropped" in d or "warning" in d):
                print(f"  note: {d.split(': ', 1 if several else 2)[-1] if d.count(': ') >= 2 else d}")
        if r.package is not None:
            print(f"  {r.package.summary()}")
        print(f"  decisions and checksums: {r.bundle / 'manifest.json'}; timings: {r.record}")
        print(f"  manifest sha256: {manifest_sha256(r.bundle)} (check later: edgepack verify BUNDLE --manifest-sha256 HEX)")


def print_compare_summary(report: dict, out) -> None:
    """The last lines of ``compare``: one line per target, then where the report is."""
    print()
    for name, t in report["targets"].items():
        recipes = ", ".join(sorted(set(v or "?" for v in t.get("recipes", {}).values()))) or "-"
        acc = t.get("accuracy") or {}
        checked = acc.get("status") or "not verified"
        if acc.get("agreement") is not None:
            checked += f", agreement {acc['agreement']:.4f}"
        elif acc.get("cosine_min") is not None:
            checked += f", cos {acc['cosine_min']:.4f}"
        lat = (t.get("estimates") or {}).get("latency_ms") or {}
        est = f", ~{lat['value']:.3g} ms on the device (estimated)" if lat.get("value") is not None else ""
        size = t.get("size")
        shipped = (f"{size['total_bytes'] / 1e6:.2f} MB with its runtime" if size else
                   f"{t['bundle_bytes'] / 1e6:.2f} MB bundle")
        print(f"  {name}: {recipes}, {shipped}, {checked}{est}")
    for name, why in report.get("failed_targets", {}).items():
        print(f"  {name}: NOT BUILT - {why}")
    print(f"report: {out / 'report.html'} (also report.md, report.json)")


def verification_line(ver: dict) -> str:
    """'weakly verified, n=16: ...' - with the hint that lifts a weak or missing verification."""
    line = ver.get("summary") or ver.get("status", "")
    if ver.get("status") == "not verifiable":
        line += " - UNVERIFIED: pass --calibration DIR with real inputs (or --eval FILE.py:FUNCTION)"
    elif ver.get("status") == "weakly verified":
        line += " - give 48 or more real samples for 32 held-out ones"
    return line


def manifest_sha256(bundle) -> str:
    """The sha256 of a bundle's manifest.json, for ``edgepack verify BUNDLE --manifest-sha256``."""
    from pathlib import Path

    from ..model import sha256_file

    return sha256_file(Path(bundle) / "manifest.json")


def print_verify(findings, bundle) -> None:
    """``verify``'s lines: what was checked, the problems, the measurement (``--measure``), the verdict."""
    for line in findings.checked:
        print(f"checked: {line}")
    for line in findings.problems:
        print(f"PROBLEM: {line}")
    if findings.measurement:
        from ..measure import describe

        m = findings.measurement
        print(describe(m))  # "measured ... on <machine> ... vs estimated ... for <device>"
        for line in m["reference_check"]:
            print(f"reference check on {m['provider']}: {line}")
        if m.get("note"):
            print(f"note: {m['note']}")
    elif findings.measurement_skipped:
        print(findings.measurement_skipped)
    print(f"{bundle}: {'ok' if findings.ok else f'{len(findings.problems)} problem(s)'}")
