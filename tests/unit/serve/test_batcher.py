"""The batcher: per-key batches within a window, bounded size and queue, failures alone."""

import threading
import time

import pytest

from metarag.serve.batcher import Batcher, QueueFull, Stopped


class Recorder:
    """A batch function that records its batches; can be held closed and made to fail."""

    def __init__(self, fail_on=()):
        self.batches, self.fail_on = [], set(fail_on)
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key, payloads):
        self.gate.wait(10)
        self.batches.append((key, list(payloads)))
        if self.fail_on & set(payloads):
            raise ValueError(f"bad payload in {payloads}")
        return [f"{key}:{p}" for p in payloads]


@pytest.fixture
def make():
    made = []

    def build(run, **kwargs):
        batcher = Batcher(run, **{"window_s": 0.05, "max_batch": 3, "max_queue": 16, **kwargs})
        batcher.start()
        made.append(batcher)
        return batcher

    yield build
    for b in made:
        b.stop()


def test_jobs_of_one_key_share_a_batch_and_others_wait_their_turn(make):
    run = Recorder()
    run.gate.clear()  # hold the worker so every job is queued before the first batch
    batcher = make(run)
    first = batcher.submit("a", 0)
    while batcher.depth:  # the worker has taken job 0 and is blocked in run()
        time.sleep(0.001)
    futures = [batcher.submit(key, i) for i, key in enumerate("abababa", start=1)]
    run.gate.set()
    results = [f.result(10) for f in [first, *futures]]
    assert [r.value for r in results] == ["a:0", *(f"{k}:{i}" for i, k in
                                                   enumerate("abababa", start=1))]
    assert run.batches == [("a", [0]), ("a", [1, 3, 5]), ("b", [2, 4, 6]), ("a", [7])]
    assert [r.batch_size for r in results] == [1, 3, 3, 3, 3, 3, 3, 1]


def test_a_failing_batch_is_rerun_one_by_one(make):
    run = Recorder(fail_on={2})
    run.gate.clear()
    batcher = make(run)
    blocker = batcher.submit("x", 0)
    while batcher.depth:
        time.sleep(0.001)
    futures = [batcher.submit("k", i) for i in (1, 2, 3)]
    run.gate.set()
    assert blocker.result(10).value == "x:0"
    assert futures[0].result(10).value == "k:1" and futures[2].result(10).value == "k:3"
    with pytest.raises(ValueError, match="bad payload"):
        futures[1].result(10)
    assert ("k", [1, 2, 3]) in run.batches and ("k", [2]) in run.batches
    assert batcher.submit("k", 4).result(10).value == "k:4"  # the worker lives on


def test_the_queue_is_bounded_and_stop_fails_waiting_jobs(make):
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_queue=2, max_batch=1)
    running = batcher.submit("a", 0)
    while batcher.depth:
        time.sleep(0.001)
    waiting = [batcher.submit("a", 1), batcher.submit("a", 2)]
    with pytest.raises(QueueFull, match="waiting"):
        batcher.submit("a", 3)
    threading.Timer(0.1, run.gate.set).start()
    batcher.stop()
    assert running.result(10).value == "a:0"
    for future in waiting:
        with pytest.raises(Stopped):
            future.result(10)
    with pytest.raises(Stopped):
        batcher.submit("a", 4)


def test_a_cancelled_job_is_skipped(make):
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_batch=1)
    batcher.submit("a", 0)
    while batcher.depth:
        time.sleep(0.001)
    cancelled = batcher.submit("a", 1)
    kept = batcher.submit("a", 2)
    assert cancelled.cancel()
    run.gate.set()
    assert kept.result(10).value == "a:2"
    assert [p for _, batch in run.batches for p in batch] == [0, 2]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda k, p: p, max_batch=0)
