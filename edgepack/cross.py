"""Cross-building: can this build host stand in for the target's processor? (issue #22)

A bundle must depend on the model, the profile and the data, never on the machine that builds it. A
host *measurement* (the speed gate's timing) may decide something only when the host can stand in
for the target: the same ISA family (an x86_64 host for an x86_64 target, an aarch64 host for an
arm64 one) with every ISA feature the profile lists (``[isa] features``: int8 dot products, fp16
arithmetic change which kernels run and how fast). Otherwise the decision rests on the profile's
rules and figures and the cost model's estimate for the target (:mod:`edgepack.speed_basis`), and the
host's timing stays in the build record as information.

The words recorded in a bundle name only the ISA family and the profile's features, never the host's
CPU model, so two hosts that both stand in (or both do not) write the same bytes.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# platform.machine() -> the profiles' [isa] arch
ISA_OF_MACHINE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# a profile's [isa] feature -> the /proc/cpuinfo flags (x86 'flags', aarch64 'Features') any of which provides it
FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx_vnni": ("avx_vnni", "avx512_vnni"),  # VEX or EVEX VPDPBUSD: MLAS's exact u8s8 int8 dot product
    "avx512": ("avx512f",),
    "neon": ("asimd",),
    "fp16": ("asimdhp",),  # Armv8.2 fp16 vector arithmetic
    "dotprod": ("asimddp",),  # SDOT/UDOT
    "i8mm": ("i8mm",),
}


@dataclass(frozen=True)
class Host:
    isa: str  # "x86_64", "arm64", or the machine name when unknown
    flags: frozenset[str]


@dataclass(frozen=True)
class StandIn:
    ok: bool
    why: str  # host-class words only (ISA family, the profile's features): they may be recorded in a bundle


def _cpu_flags(text: str) -> frozenset[str]:
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def this_host() -> Host:
    machine = platform.machine().lower()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    return Host(ISA_OF_MACHINE.get(machine, machine or "unknown"), _cpu_flags(text))


def stands_in(profile, host: Host | None = None) -> StandIn:
    """Whether ``host`` (this machine by default) can stand in for ``profile``'s processor, and why."""
    host = host or this_host()
    if host.isa != profile.arch:
        return StandIn(False, f"an {host.isa} build host cannot stand in for this {profile.arch} target")
    missing = [f for f in profile.isa_features if not host.flags.intersection(FEATURE_FLAGS.get(f, (f,)))]
    if missing:
        return StandIn(False, f"the {host.isa} build host lacks the target's {', '.join(missing)}")
    listed = f" with the target's {', '.join(profile.isa_features)}" if profile.isa_features else ""
    return StandIn(True, f"an {host.isa} build host{listed} stands in for this {profile.arch} target")
