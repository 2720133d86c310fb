"""``--verify-on-target``: the shipped artifact judged on the target's own runtime build under emulation.

For a target whose backend reports an emulation (:meth:`Backend.emulation`: today the Pis' CPU-EP
onnxruntime, whose runtime is the aarch64 PyPI wheel of the pinned version), the artifact is run on that
build under qemu user-mode emulation (:mod:`edgepack.emulator`, the target's CPU model) on the same
verification inputs and judged by the same function, metrics and bars (:func:`edgepack.judge.judge`).
That judgement decides, and it is the one the manifest records.

Which candidates run emulated (an emulated run costs seconds to minutes, the host run milliseconds): the
build host's check still screens every candidate; only the candidate that passed it and the host speed
gate - the one about to ship - is run on the target's runtime. If it fails there it is dropped like any
failed judgement and the next recipe is tried (:func:`decide`). So the shipped artifact passed on both
kernel sets; a recipe the host's kernels reject is not given a second chance on aarch64 (that would cost
one more emulated run per rejected recipe).

Where a check ran: ``verification.ran_on`` in the manifest (arch, CPU model, runtime, "emulated") - nothing
that depends on the build host, so bundles stay byte-identical; the qemu version, host machine, the CPU
features the guest saw, the wall time and the host-vs-target differences go to the build record. Emulated
wall time is never a latency. ``--eval``: the user's function drives a runner interactively, so it runs
on the build host's runtime (``ran_on.user_metric`` says so).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import emulator
from .errors import StageError

EMULATED = "qemu user-mode"
LEVEL = "disable"  # as the backend's run_shipped: the .ort exactly as stored (a minimal build does no more)


@dataclass(frozen=True)
class OnTarget:
    judgement: object  # judge.Judgement, its reason saying where it ran
    ran_on: dict  # the manifest's verification.ran_on
    record: dict  # the build record's entry (host-dependent facts, emulated wall time)


def spec_for(profile) -> dict | None:
    from .backends import backend_for

    return backend_for(profile).emulation(profile)


def require(targets, wanted: bool) -> None:
    """Before any work: with ``--verify-on-target`` every emulator the targets need must be ready (exit 2)."""
    if not wanted:
        return
    specs = [s for s in map(spec_for, targets) if s is not None]
    for arch in sorted({s["arch"] for s in specs}):
        ok, why = emulator.available(arch)
        if not ok:
            then = "" if "emulator setup" in why else f"; then run `edgepack emulator setup {arch}`"
            msg = f"--verify-on-target needs the {arch} emulator: {why}{then}"
            raise emulator.EmulatorError(msg)
    for s in specs:
        try:
            emulator.qemu_cpu(s["cpu"], s["arch"])
        except emulator.EmulatorError as exc:
            msg = f"--verify-on-target: {exc}"
            raise emulator.EmulatorError(msg) from None


def spec(ctx) -> dict | None:
    return spec_for(ctx.target) if ctx.verify_on_target else None


def not_emulated(ctx) -> str | None:
    """The decision recorded when --verify-on-target was asked for a target it cannot emulate."""
    if not ctx.verify_on_target or spec_for(ctx.target) is not None:
        return None
    return (f"--verify-on-target: {ctx.target.name}'s runtime build cannot be emulated on this host (only "
            "glibc-Linux CPU targets of the onnxruntime wheel can); checked on the build host only")


def _key(ctx, *paths: Path) -> str:
    if ctx.memo is None:
        return "|".join(str(p) for p in paths)
    return "|".join(ctx.memo.file_key(p) for p in paths if p.exists())


def _memo(ctx, key: tuple, compute):
    return compute() if ctx.memo is None else ctx.memo.get_or_compute(key, compute)


def _where(env) -> str:
    return f"{env.arch} onnxruntime {env.onnxruntime} ({env.cpu_model}, {EMULATED})"


def _vs_host(host: list[dict], target: list[dict]) -> dict:
    """Per output: how far the target's outputs are from the build host's (same file, same inputs)."""
    from .gates import compare_outputs, round_metrics

    got = round_metrics(compare_outputs(host, target))
    return {name: {k: m[k] for k in ("max_abs_err", "cosine_min", "nonfinite_values") if k in m}
            for name, m in got.items()}


def check(ctx, backend, m) -> OnTarget | None:
    """``m.artifact`` run on the target's runtime under emulation and judged; None without the flag or
    where the target cannot be emulated. Runs are shared (same file, CPU model and inputs)."""
    from .judge import _user_value, judge

    s = spec(ctx)
    if s is None:
        return None
    files = _key(ctx, m.artifact, *m.companions)
    run = _memo(ctx, ("emulated", s["arch"], s["cpu"], files, m.samples_key),
                lambda: emulator.run(m.artifact, list(m.verify_inputs), level=LEVEL, **s))
    host = _memo(ctx, ("run", backend.name, backend.verified_on(ctx.target), files, m.samples_key),
                 lambda: backend.run_shipped(ctx, m))  # the judge's key: the host run is usually shared
    env = run.environment
    got = judge(list(m.reference_outputs), run.outputs, m.kinds, m.recipe.tolerance, m.evidence,
                _user_value(ctx, backend, m))
    got = replace(got, reason=f"on {_where(env)}: {got.reason}")
    ran_on = {"arch": env.arch, "cpu": env.cpu_model, "runtime": f"onnxruntime {env.onnxruntime} ({env.arch} wheel)",
              "emulated": EMULATED}
    if got.user_metric is not None:
        ran_on["user_metric"] = "the build host's runtime (--eval drives a runner interactively)"
    record = {"artifact": m.artifact.name, "recipe": m.recipe.name if m.recipe else None,
              "environment": env.to_json(), "samples": len(m.verify_inputs),
              "emulated_wall_s": round(run.wall_s, 2), "note": emulator.TIMING_NOTE,
              "outcome": got.status, "vs_host": _vs_host(host, run.outputs)}
    return OnTarget(got, ran_on, record)


def decide(ctx, backend, state, judgement):
    """After a candidate passed on the build host (and its speed gate): (the judgement that decides, the
    reason it is dropped or None). Without --verify-on-target: (judgement, None)."""
    try:
        on = check(ctx, backend, state)
    except emulator.EmulatedRunError as exc:
        return judgement, f"it does not run on the target's runtime under emulation: {exc}"
    if on is None:
        return judgement, None
    if not on.judgement.passed:
        return on.judgement, f"outside tolerance {on.judgement.reason} (it passed on the build host)"
    return on.judgement, None


def verified(ctx, backend, m, host_judgement, decisions: list[str], measured: dict):
    """The verify stage's judgement of a shipped artifact: the target's where --verify-on-target applies
    (recorded with ``ran_on``; the build host's result in the decisions), else the host's. Returns
    (judgement, checked-json update, ran_on or None)."""
    note = not_emulated(ctx)
    if note:
        decisions.append(f"{m.name}: {note}")
    try:
        on = check(ctx, backend, m)
    except emulator.EmulatedRunError as exc:
        msg = f"{m.name}: the shipped {m.artifact.name} does not run on the target's runtime under emulation: {exc}"
        raise StageError(msg) from None
    if on is None:
        return host_judgement, {}, None
    decisions.append(f"{m.name}: shipped {m.artifact.name} on the build host ({backend.host_runtime}): "
                     f"{host_judgement.status}: {host_judgement.reason}")
    measured[m.name] = on.record
    return on.judgement, {"runtime": f"{on.ran_on['runtime']}, {on.ran_on['cpu']}, under {EMULATED}"}, on.ran_on


# ---------------------------------------------------------------------------------- `edgepack verify --on-target`


def _manifest_cpu(doc: dict) -> str | None:
    """The CPU model a bundle was judged on (``verification.ran_on.cpu``), else its built-in profile's CPU."""
    ver = doc.get("verification")
    records = [ver] if isinstance(ver, dict) and "status" in ver else list(ver.values()) if isinstance(ver, dict) else []
    cpus = {r["ran_on"].get("cpu") for r in records if isinstance(r, dict) and isinstance(r.get("ran_on"), dict)}
    if len(cpus) == 1 and isinstance(next(iter(cpus)), str):
        return next(iter(cpus))
    target = doc.get("target") if isinstance(doc.get("target"), dict) else {}
    from .target import builtin_names, load_target

    name = target.get("name")
    if isinstance(name, str) and target.get("profile") == f"builtin:{name}" and name in builtin_names():
        return load_target(name).cpu
    return None


def bundle_spec(doc: dict, backend) -> dict:
    """``{arch, cpu}`` to run a bundle's models on its target's runtime; EmulatorError (exit 2) when the
    bundle's target cannot be emulated here or the emulator is not prepared."""
    from types import SimpleNamespace

    target = doc.get("target") if isinstance(doc.get("target"), dict) else {}
    fields = {k: target.get(k) if isinstance(target.get(k), str) else None for k in ("name", "execution_provider", "abi")}
    cpu = _manifest_cpu(doc)
    s = backend.emulation(SimpleNamespace(**fields, cpu=cpu)) if backend is not None else None
    if s is None or s.get("cpu") is None:
        why = "its runtime build cannot be emulated here" if s is None else "the manifest does not say which CPU"
        msg = f"--on-target: the bundle of target '{fields['name'] or '?'}': {why}"
        raise emulator.EmulatorError(msg)
    ok, why = emulator.available(s["arch"])
    if not ok:
        then = "" if "emulator setup" in why else f"; then run `edgepack emulator setup {s['arch']}`"
        msg = f"--on-target needs the {s['arch']} emulator: {why}{then}"
        raise emulator.EmulatorError(msg)
    emulator.qemu_cpu(s["cpu"], s["arch"])
    return s


def run_bundle(path: Path, session_config: dict, feed: dict, s: dict) -> tuple[dict, str]:
    """One bundled model on its reference feed under emulation: ({output name: array}, where it ran); opened
    with onnxruntime's default level, as the host check (``Backend.run_bundled``) opens it."""
    if session_config:
        msg = f"the emulated runner does not apply session config entries ({', '.join(sorted(session_config))})"
        raise emulator.EmulatedRunError(msg)
    run = emulator.run(path, [feed], level=None, **s)
    return run.outputs[0], _where(run.environment)
