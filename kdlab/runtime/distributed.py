"""Multi-process training through torch.distributed: the process group, who this process is, and the few
collectives kdlab needs. Nothing here knows about recipes, methods or files.

``torchrun --nproc_per_node=N -m kdlab distill RECIPE`` starts N processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`session` (entered by ``kdlab train`` / ``kdlab distill``)
joins them into the default process group: gloo when no GPU is visible, ``cpu:gloo,cuda:nccl`` (gradients over
NCCL, small CPU tensors and objects over gloo) with ``cuda:LOCAL_RANK`` as each process's device otherwise.
Without torchrun (or before :func:`session`) every function here behaves as one process: rank 0 of 1.

What the rest of kdlab does with it (PyTorch's DistributedDataParallel recipe):

* data: each rank takes a disjoint, equal part of every global batch (:func:`kdlab.data.classification.iterate_batches`
  ``shard``); the recipe's ``data.batch_size`` is the global batch;
* the trained module (the method, whose ``forward`` is the step) is wrapped by :func:`data_parallel`, so DDP
  averages the gradients over ranks -- with equal shards and a per-sample mean loss, the global-batch mean;
* rank 0 alone writes files (checkpoints, metrics, summaries, table rows, trackers) and takes the run
  directory's lock; :func:`from_main` hands its decisions (reuse, resume, refuse) to the other ranks;
* evaluation shards the images (:func:`shard_range`) and adds the counts (:func:`all_sum`, :func:`all_gather`).

Failures: the process group has a timeout (:data:`TIMEOUT`), so a rank left waiting for a peer that stopped
raises instead of hanging; torchrun stops the other workers when one exits non-zero. An error every rank meets
alike is printed once: :func:`agree` and :func:`from_main` raise :class:`kdlab.errors.ReportedElsewhere` on the
ranks that did not report it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import nn

from kdlab.errors import KdlabError, ReportedElsewhere

T = TypeVar("T")

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a missing peer before it raises (also bounds rank 0's solo file writes)."""


def launched() -> bool:
    """Whether torchrun (or another launcher with its environment variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def available() -> bool:
    return torch.distributed.is_available()


def active() -> bool:
    """Whether this process is in an initialised process group."""
    return available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints results."""
    return rank() == 0


def shard() -> tuple[int, int]:
    """``(rank, world size)``, the ``shard`` argument of the data iterators."""
    return rank(), world_size()


def shard_range(n: int) -> tuple[int, int]:
    """This rank's contiguous part ``[lo, hi)`` of ``n`` items (parts differ in size by at most one)."""
    r, w = shard()
    return n * r // w, n * (r + 1) // w


@contextlib.contextmanager
def session(timeout: timedelta = TIMEOUT) -> Iterator[None]:
    """Join torchrun's process group for the duration of a command (no-op without torchrun or when joined)."""
    if not launched() or active():
        yield
        return
    if not available():
        raise KdlabError("this PyTorch build has no torch.distributed: run kdlab as one process (without torchrun)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise KdlabError(f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} CUDA device(s) are visible: "
                             f"start torchrun with --nproc_per_node={torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local_rank)  # "cuda" now means cuda:LOCAL_RANK in this process
        backend = "cpu:gloo,cuda:nccl"
    torch.distributed.init_process_group(backend, timeout=timeout)
    try:
        yield
    except Exception as error:  # on an error the process exits and torchrun stops the other workers
        if peer_failure(error):  # a collective broken by a peer that stopped: that peer prints the cause
            raise ReportedElsewhere(f"rank {rank()} stopped because another rank failed") from None
        raise
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks (float64 on the CPU: counts stay exact up to 2^53)."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def all_gather(value: T) -> list[T]:
    """Every rank's (picklable) ``value``, in rank order."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def from_main(decide: Callable[[], T]) -> T:
    """Rank 0 runs ``decide()`` and every rank gets its result; a :class:`KdlabError` there is raised on rank 0
    and mirrored, unprinted, on the others (any other exception on rank 0 stops them the same way)."""
    if not active():
        return decide()
    payload: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            payload[0] = ("ok", decide())
        except BaseException as raised:  # noqa: BLE001 - handed to the other ranks, then re-raised here
            error = raised
            payload[0] = ("error", f"{type(raised).__name__}: {raised}")
    torch.distributed.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    status, value = payload[0]
    if status != "ok":
        raise ReportedElsewhere(f"rank 0 stopped: {value}")
    return value


def agree(work: Callable[[], T]) -> T:
    """Every rank runs ``work()``; if any raises a :class:`KdlabError`, the lowest such rank raises its own (and
    prints it) and the others raise :class:`ReportedElsewhere`, so a mistake every rank finds is shown once."""
    if not active():
        return work()
    result: Any = None
    error: KdlabError | None = None
    try:
        result = work()
    except KdlabError as raised:
        error = raised
    failed = all_gather(error is not None)
    if not any(failed):
        return result
    first = failed.index(True)
    if rank() == first:
        raise error  # type: ignore[misc]
    raise ReportedElsewhere(f"rank {first} stopped with an error")


def peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank stopped (it reports its own error)."""
    if not active():
        return False
    dist_error = getattr(torch.distributed, "DistError", ())
    if isinstance(error, dist_error):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(marker in text for marker in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted"))


def data_parallel(method: nn.Module, sync_bn: bool) -> nn.Module:
    """``method`` wrapped in DistributedDataParallel (its ``forward`` is the step, so the gradients of every step
    are averaged over ranks), with BatchNorm turned into SyncBatchNorm first when ``sync_bn``; ``method`` itself
    in one process. The wrapper shares ``method``'s parameters: save and load through ``method``."""
    if not active():
        return method
    if sync_bn and world_size() > 1:
        device = next(method.parameters()).device
        if device.type != "cuda":
            raise KdlabError("train.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel): set "
                             "train.sync_bn=false, or use a model without BatchNorm, to train on CPUs")
        nn.SyncBatchNorm.convert_sync_batchnorm(method)  # replaces the BatchNorm children in place
    device = next(method.parameters()).device
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)


def training_problems(rng: str, sync_bn: bool, batch_size: int, device: str, task: str,
                      teacher: bool = False) -> list[str]:
    """Why a run cannot train with this world size (one line each, naming the fix; ``teacher``: the recipe is a
    teacher's, which ``--set`` does not reach); empty in one process."""
    world = world_size()
    if world <= 1:
        return []
    problems = []
    if task != "classification":
        problems.append(f"multi-process training supports classification only, not {task}: run it as one process "
                        "(without torchrun)")
    if rng != "sample":
        problems.append(f"train.rng is batch, whose augmentation and attack starts depend on how batches are split, "
                        f"so {world} processes would not train the run this recipe names: "
                        + ("set train.rng: sample (the default) in the teacher recipe" if teacher
                           else "pass --set train.rng=sample (the default)"))
    if batch_size % world:
        problems.append(f"data.batch_size {batch_size} does not split evenly over {world} processes: use a multiple "
                        f"of {world}")
    if sync_bn and (device == "cpu" or not torch.cuda.is_available()):
        problems.append("train.sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel): set "
                        "train.sync_bn=false, or use a model without BatchNorm, to train on CPUs")
    return problems


def refuse_multiprocess(command: str) -> None:
    """Commands that do not shard their work refuse torchrun instead of repeating it N times."""
    if launched() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if os.environ.get("RANK") != "0":
            raise ReportedElsewhere(f"{command} refused under torchrun (rank 0 says why)")
        raise KdlabError(f"{command} runs as one process: start it without torchrun (only kdlab train and "
                         "kdlab distill use several processes)")
