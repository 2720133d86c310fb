"""A background lane for model runs whose outputs are needed a little later.

A check's model runs (onnxruntime releases the GIL while it runs) can go on while the build does
single-threaded Python work that does not depend on them (``edgepack.stages.prepare``: the rewrite
check's runs beside the first candidate's quantization). Jobs wait in one queue; one daemon thread
takes them in order, and a caller that needs results takes queued jobs too (:meth:`Lane.results`), so
once the caller has nothing else to do both cores work through the queue.

Each job is one run of one sample through a session whose intra-op thread count the queuer fixed, the
same computation whichever thread makes it (tests/test_run_sharing.py): results never depend on the timing.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from collections.abc import Sequence
from typing import Any, Callable


class _Job(Future):
    """A queued call and the future of its result; a job cancelled before it ran (:meth:`Lane.cancel_queued`)
    or stopped while it ran (:meth:`Lane.stop`) is run by whoever asks for it after all."""

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        super().__init__()
        self.fn, self.args = fn, args
        self.stopped = False  # stopped in flight by :meth:`Lane.stop`: run again by whoever asks

    def value(self) -> Any:
        if self.cancelled() or (self.stopped and self.exception() is not None):  # (a stop may come just late)
            return self.fn(*self.args)
        return self.result()


class Lane:
    """Jobs in two queues: ``first`` ones (runs the caller waits for right away, such as calibration)
    are taken before the others (checks whose results are needed later)."""

    def __init__(self, name: str = "edgepack-lane") -> None:
        self._first: collections.deque = collections.deque()
        self._later: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy: _Job | None = None  # the job the lane's thread is running
        self._name = name

    def submit(self, fn: Callable[..., Any], *args: Any, first: bool = False) -> Future:
        fut = _Job(fn, args)
        with self._cv:
            (self._first if first else self._later).append(fut)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._cv.notify()
        return fut

    def _pop(self):
        return self._first.popleft() if self._first else self._later.popleft() if self._later else None

    @staticmethod
    def _do(job: _Job) -> None:
        if not job.set_running_or_notify_cancel():
            return
        try:
            job.set_result(job.fn(*job.args))
            job.fn, job.args = None, ()  # what it held (a session, bytes) goes with it
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            job.set_exception(exc)
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM in a thread helping: its own to raise
                raise

    def _work(self) -> None:
        while True:
            with self._cv:
                self._busy = None
                self._cv.notify_all()
                job = self._pop()
                while job is None:
                    self._cv.wait()
                    job = self._pop()
                self._busy = job
            self._do(job)
            job = None  # its session must not stay alive with an idle thread

    def cancel_queued(self) -> None:
        """Drop every job not started yet (a build ended: what it queued and did not ask for); a job
        asked for later is run by the asker (see :meth:`results`)."""
        with self._cv:
            for queue in (self._first, self._later):
                for job in queue:
                    job.cancel()
                queue.clear()

    def settle(self) -> None:
        """A build ended: drop what it queued and never asked for, and wait for the job in flight (its
        time limit bounds it), so nothing it runs reports after the build has."""
        self.cancel_queued()
        with self._cv:
            self._cv.wait_for(lambda: self._busy is None)

    def stop(self, seconds: float = 5.0) -> None:
        """A build failed, or the process is about to exit (no job may be left inside onnxruntime: its
        teardown would abort the process): queued jobs are dropped, the one in flight is stopped as a
        run over its time limit is (whoever asks for it runs it again), and this waits at most
        ``seconds`` for it to return."""
        from ..limits import stop_runs_of

        self.cancel_queued()
        with self._cv:
            if self._busy is None or self._thread is None:
                return
            self._busy.stopped = True
            stop_runs_of(self._thread.ident)
            self._cv.wait_for(lambda: self._busy is None, timeout=seconds)

    def results(self, futures: list[Future], first_only: bool = False) -> list[Any]:
        """The futures' results in order, running queued jobs in this thread meanwhile (with
        ``first_only`` only ``first`` ones: the caller's own are first jobs and it must not wait behind a
        later one); the first failure is raised (as the synchronous call would have raised it)."""
        pending = [f for f in futures if not f.done()]
        while pending:
            with self._cv:
                job = (self._first.popleft() if self._first else None) if first_only else self._pop()
            if job is not None:
                self._do(job)
            else:
                wait(pending, return_when=FIRST_COMPLETED)
            _raise_failure(pending)  # a failure ends the wait: the rest is not needed
            pending = [f for f in pending if not f.done()]
        _raise_failure(futures)
        return [f.value() if isinstance(f, _Job) else f.result() for f in futures]


def _raise_failure(futures: list[Future]) -> None:
    for f in futures:
        if f.done() and not f.cancelled() and f.exception() is not None and not getattr(f, "stopped", False):
            raise f.exception()  # type: ignore[misc]


LANE = Lane()


class Pending(Sequence):
    """Outputs being computed on the lane, one per input, in order: indexing waits for that one, and
    :meth:`result` (or iterating) for all, helping the lane meanwhile. ``wrap`` turns a failure into the
    error the synchronous call would have raised."""

    def __init__(self, futures: list[Future], wrap: Callable[[BaseException], BaseException] | None = None) -> None:
        self._futures = futures
        self._value: list | None = None
        self._wrap = wrap

    def _get(self, futures: list[Future]) -> list:
        try:
            return LANE.results(futures)
        except Exception as exc:
            self.cancel()  # the rest would only fail or be thrown away
            if self._wrap is None:
                raise
            raise self._wrap(exc) from exc

    def cancel(self) -> None:
        """Drop the runs not started yet (outputs nobody will ask for: the build failed or moved on);
        a run in flight ends as any run does (its time limit bounds it)."""
        for f in self._futures:
            f.cancel()

    def result(self) -> list:
        if self._value is None:  # targets built in parallel may ask at once: each gets the same outputs
            self._value = self._get(self._futures)
        return self._value

    def __len__(self) -> int:
        return len(self._value) if self._value is not None else len(self._futures)

    def __getitem__(self, i):
        if self._value is None and isinstance(i, int):
            return self._get([self._futures[i]])[0]
        return self.result()[i]

    def __iter__(self):
        return iter(self.result())


class Done(Pending):
    """Outputs computed already (a model too large to run beside other work)."""

    def __init__(self, value: list) -> None:
        super().__init__([])
        self._value = value
