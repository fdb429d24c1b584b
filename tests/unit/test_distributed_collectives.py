"""`metarag.distributed`: slices that add up to the meta-batch, no-ops for one process, and the
collectives on 2 real gloo processes (torchrun)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from metarag import distributed


@pytest.mark.parametrize(("n", "world"), [(4, 2), (3, 2), (5, 3), (2, 4), (1, 1), (0, 2)])
def test_slices_cover_the_items_in_order_one_more_on_the_first_ranks(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in rank order
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_bounds_rejects_a_rank_outside_the_group():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        distributed.shard_bounds(4, 2, 2)


def test_one_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() is False and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    p = torch.ones(3, requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    p.grad = torch.full((3,), 2.0)
    distributed.all_reduce_grads([p, q], 3, 3)
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and q.grad.tolist() == [0.0, 0.0]  # None -> 0
    assert distributed.all_reduce_sums([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.all_gather_objects("x") == ["x"]
    with distributed.local_main_first():
        distributed.barrier()
    distributed.destroy()


_WORKER = textwrap.dedent("""
    import json, os, sys, time
    import torch
    from metarag import distributed
    from metarag.distributed import shard

    assert distributed.init() and distributed.is_distributed()
    r = distributed.rank()
    tasks = list(range(3))  # 3 "tasks": rank 0 takes 2, rank 1 takes 1
    mine = shard(tasks)
    # Per-task gradient of task t: t + 1 everywhere. This rank's mean over its tasks:
    p = torch.zeros(4, requires_grad=True)
    p.grad = torch.full((4,), sum(t + 1.0 for t in mine) / len(mine))
    q = torch.zeros(2, 3, requires_grad=True)  # no gradient on rank 1: counts as zeros
    if r == 0:
        q.grad = torch.ones(2, 3)
    distributed.BUCKET_BYTES = 8  # several buckets
    distributed.all_reduce_grads([p, q], len(mine), len(tasks))
    w = torch.full((2,), float(r), requires_grad=True)
    distributed.broadcast_params([w])
    marks = sys.argv[1]
    with distributed.local_main_first():  # local rank 0 first, though it dawdles
        if distributed.local_rank() == 0:
            time.sleep(0.5)
        open(os.path.join(marks, f"rank{r}"), "w").write(str(time.time()))
    result = {"mine": mine, "p": p.grad.tolist(), "q": q.grad.tolist(), "w": w.tolist(),
              "sums": distributed.all_reduce_sums([1.0, r]),
              "gathered": distributed.all_gather_objects({"rank": r})}
    from metarag.errors import MetaRAGError
    from metarag.meta.algorithms import MetaStepResult, TaskLosses
    from metarag.meta.inner import NonFiniteLossError
    from metarag.meta.train import MetaOptimConfig, MetaTrainConfig, _meta_batch_losses, meta_train

    # Losses of 2 + 1 tasks: the means over all 3; then a NaN on rank 1 alone skips on both.
    step = MetaStepResult(None, {}, None, [TaskLosses(None, [10.0 * (t + 1)], float(t + 1))
                                         for t in mine])
    losses = _meta_batch_losses(step, None, len(tasks))
    result["losses"] = [losses.query, losses.support, losses.failure]
    error = NonFiniteLossError("task 1 of 1, inner step 1: loss is nan") if r == 1 else None
    failed = _meta_batch_losses(None if error else step, error, len(tasks))
    result["failure"] = failed.failure
    try:
        meta_train(MetaTrainConfig(out=os.path.join(marks, "never"),
                                   meta=MetaOptimConfig(meta_batch=1)))
    except MetaRAGError as err:
        result["error"] = str(err)
    open(os.path.join(marks, f"result{r}.json"), "w").write(json.dumps(result))
    distributed.destroy()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_collectives_on_two_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script),
         str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(2)]
    assert [r["mine"] for r in results] == [[0, 1], [2]]
    for r in results:
        # (1 + 2 + 3) / 3: the single-process mean, though the slices hold 2 and 1 tasks.
        assert r["p"] == pytest.approx([2.0] * 4, abs=1e-7)
        assert [x for row in r["q"] for x in row] == pytest.approx([2 / 3] * 6, abs=1e-7)
        assert r["w"] == [0.0, 0.0]  # rank 0's values
        assert r["sums"] == [2.0, 1.0]
        assert r["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert r["losses"] == [pytest.approx(2.0), pytest.approx(20.0), None]
        assert r["failure"] == "rank 1: task 1 of 1, inner step 1: loss is nan"
        assert "meta.meta_batch (1) is smaller than the number of processes (2)" in r["error"]
    # Local rank 0 finished its body before rank 1 started its own.
    first, second = (float((tmp_path / f"rank{r}").read_text()) for r in range(2))
    assert first <= second
    assert not (tmp_path / "never").exists()
