"""The multi-task loop's sampling: pure functions of (seed, step), MetaICL's demos included."""

from metarag.data.synthetic import synthetic_suite
from metarag.train import batch_for_step, demos_for_step


def test_metaicl_demos_come_from_the_same_task_outside_the_batch():
    task = synthetic_suite(domains=["pharmacy"])[0]
    _, batch = batch_for_step([task], step=3, batch_size=4, seed=0)
    demos = demos_for_step(task, batch, step=3, k=4, seed=0)
    assert len(demos) == 4 and not {d.id for d in demos} & {e.id for e in batch}
    assert {d.id for d in demos} <= {e.id for e in task.train}
    assert demos == demos_for_step(task, batch, step=3, k=4, seed=0)  # resumable
    assert demos != demos_for_step(task, batch, step=4, k=4, seed=0)
    assert demos_for_step(task, batch, step=3, k=0, seed=0) == []
