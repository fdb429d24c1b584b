"""Request batching on one worker thread: requests that can share a model call share one.

Jobs carry a key (for answers: domain, k, in-context examples); the worker takes
the oldest job, waits up to ``window_s`` after its arrival for more jobs of the
same key (up to ``max_batch``), and runs them as one batch. Jobs of other keys
wait in arrival order. The worker is the only thread that runs the batch
function, which is what lets the model swap weights between batches safely.

A batch that fails is re-run one job at a time, so one bad request fails alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from metarag.errors import MetaRAGError

log = logging.getLogger(__name__)

RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class QueueFull(MetaRAGError, RuntimeError):
    """The server holds as many waiting requests as it allows."""


class Stopped(MetaRAGError, RuntimeError):
    """The server is shutting down."""


@dataclass
class Done:
    """A finished job: its result and how it was batched."""

    value: Any
    queue_s: float     # arrival -> its batch started
    run_s: float       # the batch's run time (shared by its jobs)
    batch_size: int


@dataclass
class _Job:
    key: Hashable
    payload: Any
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """A bounded queue of jobs and the worker thread that runs them in batches.

    Args:
        run: ``run(key, payloads) -> results`` (one per payload, same order).
        window_s: How long the oldest job waits for company.
        max_batch: Jobs per batch at most.
        max_queue: Waiting jobs at most; `submit` refuses more (`QueueFull`).
    """

    def __init__(self, run: RunBatch, *, window_s: float = 0.01, max_batch: int = 8,
                 max_queue: int = 256) -> None:
        if window_s < 0 or max_batch < 1 or max_queue < 1:
            raise ValueError(f"need window_s >= 0, max_batch >= 1, max_queue >= 1; got "
                             f"{window_s}, {max_batch}, {max_queue}")
        self.run, self.window_s = run, window_s
        self.max_batch, self.max_queue = max_batch, max_queue
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet in a batch)."""
        with self._cond:
            return len(self._jobs)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread."""
        if self.alive:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="metarag-serve-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running batch, fail the waiting jobs (`Stopped`), end the worker."""
        with self._cond:
            self._stopping = True
            waiting, self._jobs = self._jobs, []
            self._cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Stopped("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, key: Hashable, payload: Any) -> Future:
        """Queue a job; its future resolves to a `Done` or raises what the run raised.

        Raises:
            QueueFull: ``max_queue`` jobs are already waiting.
            Stopped: The batcher is stopped.
        """
        job = _Job(key, payload)
        with self._cond:
            if self._stopping or not self.alive:
                raise Stopped("the server is not running")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(f"{len(self._jobs)} requests are waiting already; retry later")
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    def _next_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._jobs[0]
            deadline = first.arrived + self.window_s
            while (sum(j.key == first.key for j in self._jobs) < self.max_batch
                   and not self._stopping and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
            batch = [j for j in self._jobs if j.key == first.key][:self.max_batch]
            taken = {id(j) for j in batch}
            self._jobs = [j for j in self._jobs if id(j) not in taken]
        return [j for j in batch if j.future.set_running_or_notify_cancel()]  # not cancelled

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        started = time.monotonic()
        self.batches += 1
        try:
            results = list(self.run(batch[0].key, [j.payload for j in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the batch function returned {len(results)} results for "
                                   f"{len(batch)} jobs")
        except Exception as err:
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            log.warning("a batch of %d failed (%s: %s); running its requests one by one",
                        len(batch), type(err).__name__, err)
            for job in batch:
                self._run_alone(job)
            return
        run_s = time.monotonic() - started
        for job, value in zip(batch, results):
            job.future.set_result(Done(value, started - job.arrived, run_s, len(batch)))

    def _run_alone(self, job: _Job) -> None:
        started = time.monotonic()
        try:
            [value] = self.run(job.key, [job.payload])
        except Exception as err:
            job.future.set_exception(err)
            return
        job.future.set_result(Done(value, started - job.arrived, time.monotonic() - started, 1))
