"""Consistency rules of a target profile, checked after its TOML types: what goes with what."""

from __future__ import annotations

import math

from .backends import BACKENDS, backend_named
from .errors import ProfileError
from .target import PRECISIONS, STOCK_SIZE_SOURCES, TargetProfile


def _check_pairing(p: TargetProfile, fail) -> None:
    """The execution provider and format must be ones the profile's engine serves. The message names
    the engine a value belongs to when it belongs to that engine alone, else the engine's own."""
    backend = backend_named(p.engine)
    for key, value, attr, what in (("runtime.execution_provider", p.execution_provider, "execution_providers",
                                    "the {} provider"), ("conversion.format", p.format, "formats", "format '{}'")):
        own = getattr(backend, attr)
        if value in own:
            continue
        owner = next((b for b in BACKENDS.values() if value in getattr(b, attr)), None)
        if owner is not None and len(getattr(owner, attr)) == 1:
            fail(key, f"{what.format(value)} goes with engine '{owner.name}' and only with it")
        fail(key, f"{what.format(own[0])} goes with engine '{backend.name}'" +
             (" and only with it" if len(own) == 1 else f" (with {', '.join(own[1:])})"))


def check_consistency(p: TargetProfile, label: str) -> None:
    """The rules TOML types cannot say: every engine's own (its backend's ``check_profile``) and the
    general ones (recipe list, tolerances, compute units); the first broken rule is a ProfileError."""
    def fail(key: str, why: str) -> None:
        msg = f"{label}: '{key}' contradicts the profile: {why}"
        raise ProfileError(msg)

    _check_pairing(p, fail)
    backend_named(p.engine).check_profile(p, fail)
    for part in p.stock_size.split("+"):  # several libraries: "<source>:<key>+<source>:<key>"
        source, _, key = part.partition(":")
        if source not in STOCK_SIZE_SOURCES or not key:
            fail("minimal_build.stock_size", f"'{p.stock_size}' must be '<{'|'.join(STOCK_SIZE_SOURCES)}>:<key>', or "
                 "several joined by '+'")
    names = [r.name for r in p.recipes]
    if not names:
        fail("quantization", "at least one recipe is needed (use name = \"none\" to ship fp32)")
    if "none" in names and names.index("none") != len(names) - 1:
        fail("quantization", "recipes after 'none' can never be chosen; put 'none' last")
    seen: set[tuple[str, str]] = set()
    backend = backend_named(p.engine)
    for i, r in enumerate(p.recipes):
        key = f"quantization[{i}]"
        if r.name not in backend.recipes:
            fail(f"{key}.name", f"engine '{p.engine}' has no '{r.name}' recipe; it implements: {', '.join(backend.recipes)}")
        if (r.name, r.applies_to) in seen:
            fail(key, f"recipe '{r.name}' for '{r.applies_to}' models is listed twice")
        seen.add((r.name, r.applies_to))
        if r.name != "static-int8" and (r.activation_type is not None or r.weight_type is not None):
            fail(f"{key}.activation_type", f"recipe '{r.name}' takes no activation/weight type")
        if r.tolerance.cosine_min <= 0.0 or math.isnan(r.tolerance.cosine_min):
            fail(f"{key}.tolerance.cosine_min", "must be above 0")
    units = {u.kind for u in p.device.units}
    if p.is_accelerator and "npu" not in units and "gpu" not in units:
        fail("device.units", f"an {p.execution_provider} target needs an 'npu' or 'gpu' compute unit")
    if "cpu" not in units:
        fail("device.units", "every device needs a 'cpu' compute unit (unsupported nodes fall back to it)")
    for u in p.device.units:
        for prec in u.peak_gops:
            if prec not in PRECISIONS:
                fail(f"device.units.{u.name}.peak_gops.{prec}", f"precision must be one of {', '.join(PRECISIONS)}")
