"""Run one edgepack command in a fresh process and measure its memory (shared by the benchmarks).

Peak memory counts the whole process tree: a sampler thread sums the RSS of the command's process
and every descendant from /proc every SAMPLE_S seconds. A spike shorter than a sample can slip
between two reads, so the figure reported is the larger of that sampled peak and the process's own
getrusage peak at exit (exact for the main process); its children's getrusage peak is reported
beside it, so ``self + children`` gives an upper bound when work runs in child processes.
Stage ends are printed by the wrapper with a timestamp, so the samples also give a peak per stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE")

_WRAPPER = (
    "import logging, resource, sys, time\n"
    "from edgepack.cli import main\n"
    "class _Stages(logging.Handler):\n"
    "    def emit(self, record):\n"
    "        if record.msg == '%s: %s done in %.2fs':\n"
    "            print('STAGE_DONE', time.time(), record.args[0], record.args[1], file=sys.stderr, flush=True)\n"
    "_log = logging.getLogger('edgepack')\n"
    "_log.addHandler(_Stages())\n"
    "_log.setLevel(logging.INFO)\n"
    "_log.propagate = False\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,\n"
    "      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        pass
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed RSS of ``pid`` and all its descendants, now."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_bytes(p)
        todo.extend(_children(p))
    return total


class _Sampler(threading.Thread):
    """(time, tree RSS) samples of a running process until it exits."""

    def __init__(self, proc: subprocess.Popen):
        super().__init__(daemon=True)
        self.proc = proc
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        while self.proc.poll() is None:
            self.samples.append((time.time(), tree_rss_bytes(self.proc.pid)))
            time.sleep(SAMPLE_S)


def _stage_peaks(samples: list[tuple[float, int]], ends: list[tuple[float, str]], start: float) -> list[dict]:
    """Peak sampled tree RSS between consecutive stage ends (the first stage starts at process start)."""
    out, begin = [], start
    for end, name in ends:
        inside = [rss for t, rss in samples if begin <= t <= end]
        out.append({"stage": name, "peak_tree_rss_bytes": max(inside) if inside else None})
        begin = end
    return out


def run_edgepack(args: list[str]) -> dict:
    """{returncode, seconds, peak_rss_bytes, sampled_tree_peak_bytes, self_maxrss_bytes,
    children_maxrss_bytes, stages, errors} of ``edgepack ARGS`` run in a fresh process."""
    start = time.perf_counter()
    wall = time.time()
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    sampler = _Sampler(proc)
    sampler.start()
    _, stderr = proc.communicate()
    sampler.join()
    seconds = time.perf_counter() - start
    lines = stderr.strip().splitlines()
    peak = next((x.split()[1:] for x in reversed(lines) if x.startswith("PEAK_RSS_KB")), None)
    self_max = int(peak[0]) * 1024 if peak else None
    children_max = int(peak[1]) * 1024 if peak and len(peak) > 1 else None
    sampled = max((rss for _, rss in sampler.samples), default=0) or None
    ends = [(float(x.split()[1]), f"{x.split()[2]}:{x.split()[3]}") for x in lines if x.startswith("STAGE_DONE")]
    candidates = [v for v in (sampled, self_max) if v]
    return {"returncode": proc.returncode, "seconds": seconds,
            "peak_rss_bytes": max(candidates) if candidates else None,
            "sampled_tree_peak_bytes": sampled, "self_maxrss_bytes": self_max, "children_maxrss_bytes": children_max,
            "samples": len(sampler.samples), "stages": _stage_peaks(sampler.samples, ends, wall),
            "errors": [x for x in lines if x.startswith("error:")]}
