"""The build host itself: its CPU's name, the process's peak memory, and handing freed memory back."""

from __future__ import annotations

import platform
from pathlib import Path


def host_cpu() -> str:
    """The host CPU's model name: /proc/cpuinfo's 'model name' (x86), else its 'Hardware' line (Arm
    boards), else what the platform module knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for key in ("model name", "hardware"):
        for line in lines:
            if line.lower().startswith(key):
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":  # macOS: "Apple M2" (no /proc/cpuinfo)
        import subprocess

        try:
            brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            brand = ""
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown"


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MiB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float | None:
    """The process's resident memory now, in MiB (None where /proc does not say)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


FREE_ABOVE_MB = 512  # below this a full garbage collection (0.05-0.1 s each) frees too little to matter


def return_freed_memory_if_large() -> None:
    """:func:`return_freed_memory` when the process holds more than FREE_ABOVE_MB (or cannot tell):
    what a large model's stage freed goes back before the next stage; a small build skips the cost."""
    rss = rss_mb()
    if rss is None or rss > FREE_ABOVE_MB:
        return_freed_memory()


def return_freed_memory() -> None:
    """Give memory freed by a stage back to the system before the next one starts.

    glibc keeps freed heap blocks below its mmap threshold (which grows to 32 MiB as large blocks
    come and go: quantized weights, protobuf copies) for reuse, so RSS after a stage that handled a
    large model stays high, and the next stage's peak sits on top of it. ``malloc_trim`` releases it.
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        pass
