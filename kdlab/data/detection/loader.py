"""Streaming detection batches read by DataLoader worker processes, for training on a GPU.

With ``data.in_memory: false`` (VOC / COCO read from disk when used) every training image is decoded per
epoch; on a GPU the training process should not spend its time on that. :func:`stream_detection_batches`
yields exactly the batches of :func:`~kdlab.data.detection.dataset.iterate_detection_batches` (the same order
and flips, drawn from the same generator the same way, before any worker starts) but decodes, resizes and flips
them in ``workers`` :class:`torch.utils.data.DataLoader` processes, into pinned memory when ``pin_memory``, so
:func:`batch_to_device` copies them to the GPU without making the host wait. The training task uses it for
streaming data on cuda only (``kdlab.tasks.detection``); on the CPU the batches are read in the training
process, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlab.data.detection.dataset import DetectionDataset, epoch_plan, horizontal_flip
from kdlab.errors import KdlabError
from kdlab.runtime.device_copy import to_device

Batch = tuple[list[Tensor], list[dict[str, Any]]]


def default_workers() -> int:
    """``data.workers: null``: one reader per CPU core the process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class EpochView(Dataset):
    """Position ``i`` of an epoch: image ``order[i]`` of ``dataset``, flipped when ``flips[i]`` (picklable, so
    worker processes can be started by fork, forkserver or spawn)."""

    def __init__(self, dataset: DetectionDataset, order: Sequence[int], flips: Sequence[bool]):
        self.dataset, self.order, self.flips = dataset, list(order), list(flips)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int):
        image, target = self.dataset[self.order[position]]
        return horizontal_flip(image, target) if self.flips[position] else (image, target)


def collate(samples: list) -> Batch:
    """A batch as the detectors take it: a list of images and a list of targets."""
    return [image for image, _ in samples], [target for _, target in samples]


def stream_detection_batches(dataset: DetectionDataset, batch_size: int, generator: torch.Generator | None,
                             shuffle: bool, augment: bool, workers: int, pin_memory: bool) -> Iterator[Batch]:
    """The batches of ``iterate_detection_batches(dataset, batch_size, generator, shuffle, augment)``, read by
    ``workers`` processes (0: in this process), in pinned memory with ``pin_memory``."""
    if batch_size <= 0:
        raise KdlabError(f"batch_size must be positive (got {batch_size})")
    order, flips = epoch_plan(len(dataset), generator, shuffle, augment)
    loader = DataLoader(EpochView(dataset, order, flips), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                        prefetch_factor=2 if workers > 0 else None)
    yield from loader


def batch_to_device(batch: Batch, device: torch.device) -> Batch:
    """Images and target tensors of a detection batch on ``device`` (asynchronously on cuda)."""
    images, targets = batch
    moved = [{key: to_device(value, device) if isinstance(value, Tensor) else value for key, value in target.items()}
             for target in targets]
    return [to_device(image, device) for image in images], moved
