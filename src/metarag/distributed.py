"""Meta-batches split across processes: ``torchrun --nproc-per-node N -m metarag meta-train``.

Data parallelism over tasks. Every process builds the same model, samples the
*whole* meta-batch from the same seeded sampler (so every RNG is consumed the
same way on every rank) and keeps its slice (`shard`); each computes the
meta-gradient of its own tasks, and `all_reduce_grads` turns those into the
mean over the whole meta-batch. Each process then takes the same optimizer step
on the same gradients, so the meta-parameters stay equal everywhere and a run on
N processes follows the single-process run with the same seed (to float
rounding: the tasks' gradients are summed in another order).

Why not `DistributedDataParallel`: DDP reduces the gradients of one backward
through a wrapped module. A meta-step runs many (a backward per task, second
order through the inner loop for MAML, none at all for Reptile, whose
"gradient" is a weight difference), on parameters passed functionally
(`torch.func.functional_call`), not through a module's forward. One explicit
all-reduce of the finished meta-gradients fits every algorithm and is simpler.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) every function here
is a no-op for a single process: `rank` 0, `world_size` 1, `shard` the
identity. Backends follow the tensors' device: gloo for CPU tensors, NCCL for
CUDA ones (``"cpu:gloo,cuda:nccl"`` when CUDA is present).

Only rank 0 writes files (checkpoints, logs, TensorBoard) and shows progress;
``out`` must be a folder every rank can read for ``--resume`` (on several
machines: a shared filesystem, or the checkpoint copied to each).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_objects", "all_reduce_grads", "all_reduce_sums", "barrier",
           "broadcast_params", "destroy", "init", "is_distributed", "is_main",
           "local_main_first", "local_rank", "rank", "shard", "shard_bounds", "world_size"]

T = TypeVar("T")

# Gradients are all-reduced in flat buckets of about this size: few collectives
# (one per tensor would be slow for many small LoRA matrices), bounded extra memory.
BUCKET_BYTES = 64 * 2**20


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(timeout_minutes: float = 30.0) -> bool:
    """Join torchrun's process group when launched by it; a no-op otherwise.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` (set by ``torchrun``). Idempotent.

    Args:
        timeout_minutes: How long a collective waits for the other ranks (e.g.
            while rank 0 writes a checkpoint) before failing.

    Returns:
        Whether this process is part of a group of more than one.

    Raises:
        RuntimeError: ``WORLD_SIZE`` > 1 but torch was built without distributed support.
    """
    if is_distributed():
        return True
    if _env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed; "
                           "run a single process or install a build with it")
    backend = "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # NCCL only where this process has a GPU of its own; meta-training's tensors live on
    # the CPU today, so gloo carries them whatever the machine has.
    if (torch.cuda.is_available() and dist.is_nccl_available()
            and local_rank < torch.cuda.device_count()):
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"  # each collective picks by its tensors' device
    dist.init_process_group(backend, init_method="env://",
                            timeout=timedelta(minutes=timeout_minutes))
    return True


def is_distributed() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank in the group (0 before `init` or without torchrun).

    Read from the group, not the environment, so `shard` never splits work that
    `all_reduce_grads` would then not put back together.
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the group (1 before `init` or without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its own machine (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Whether this process writes files and shows progress: rank 0, or the only process."""
    return rank() == 0


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The slice ``[start, stop)`` of ``n`` items that ``rank`` of ``world_size`` takes.

    Contiguous slices, the first ``n % world_size`` ranks taking one item more,
    so the slices in rank order are the items in their order.

    Raises:
        ValueError: A rank outside ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's slice of ``items``, which every rank must hold in full and in the same order.

    The union of the slices over ranks is ``items``; with one process, all of them.
    """
    start, stop = shard_bounds(len(items), rank(), world_size())
    return list(items[start:stop])


def all_reduce_grads(params: Iterable[Tensor], n_local: int, n_total: int) -> None:
    """Turn each rank's mean meta-gradient over its tasks into the mean over all tasks.

    Each ``p.grad`` holds the mean over this rank's ``n_local`` tasks; it becomes
    ``sum over ranks (n_local * grad) / n_total``: the sum of the per-task
    meta-gradients over the whole meta-batch divided by its size, which is what
    a single process computes, also when the slices differ in size. A missing
    ``.grad`` counts as zeros (every rank must reduce the same tensors). Done in
    place, in flat buckets of up to `BUCKET_BYTES` per device and dtype.

    Args:
        params: The optimizer's parameters, in the same order on every rank.
        n_local: Tasks this rank computed.
        n_total: Tasks in the whole meta-batch (the sum of ``n_local``).
    """
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not is_distributed():
        return
    scale = n_local / n_total
    for bucket in _buckets([p.grad for p in params]):
        flat = torch.cat([g.reshape(-1) for g in bucket]).mul_(scale)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _buckets(tensors: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    """Consecutive runs of tensors of one device and dtype, each up to `BUCKET_BYTES`."""
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or t.device != bucket[0].device
                       or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def all_reduce_sums(values: Sequence[float]) -> list[float]:
    """Each value summed over ranks (float64, one collective); ``values`` itself with one."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` with one process).

    For small results only (per-episode losses, an error message): it pickles
    and goes through the CPU backend.
    """
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_params(params: Iterable[Tensor]) -> None:
    """Copy rank 0's values into every rank's ``params`` (the same tensors, in order).

    The ranks build the same model from the same seed; this makes sure they
    start from equal meta-parameters even where building is not bit-for-bit
    deterministic across machines.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def barrier() -> None:
    """Wait until every rank gets here (a no-op with one process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the body on each machine's local rank 0 first, then on the other ranks.

    For work whose result other ranks then read from a disk cache instead of
    redoing it at the same time (converting a model, embedding a corpus).
    Every rank passes one barrier.
    """
    first = local_rank() == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def destroy() -> None:
    """Leave the process group (a no-op when not in one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
