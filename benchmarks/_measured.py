"""Run one edgepack command in a fresh process and read its own peak RSS (shared by the benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WRAPPER = (
    "import resource, sys\n"
    "from edgepack.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_edgepack(args: list[str]) -> dict:
    """{returncode, seconds, peak_rss_bytes, errors} of ``edgepack ARGS`` (getrusage of that process, at its end)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    peak = next((int(x.split()[1]) for x in reversed(lines) if x.startswith("PEAK_RSS_KB")), None)
    return {"returncode": proc.returncode, "seconds": seconds, "peak_rss_bytes": peak * 1024 if peak else None,
            "errors": [x for x in lines if x.startswith("error:")]}
