"""Image-classification data held in memory: what every classification loader returns, and the batches cut from it.

Images are decoded once into uint8 tensors (:class:`ImageSet`; a dataset's train/val/test splits and class names
are a :class:`ClassificationData`) and augmented on tensors, batch by batch (:func:`iterate_batches`), on the
CPU or on the device the set was copied to once (:func:`on_device`). The loaders of each dataset are in their
own modules, by name in :mod:`kdlab.data.loaders`; how the splits are chosen is :mod:`kdlab.data.splits`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from kdlab.data.augment import random_crop_flip, sample_crop_flip, to_float
from kdlab.errors import KdlabError
from kdlab.runtime.device_copy import to_device
from kdlab.runtime.sample_random import IndexedBatch, per_sample

__all__ = [
    "ClassificationData",
    "ImageSet",
    "iterate_batches",
    "num_batches",
    "on_device",
]


@dataclass
class ImageSet:
    """``images``: uint8 N x C x H x W; ``labels``: int64 N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageSet.images must be uint8 N x C x H x W, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"ImageSet.labels must be int64 of length {len(self.images)}, got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass
class ClassificationData:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    classes: list[str]
    name: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------------------------- batches


def num_batches(data: ImageSet | int, batch_size: int, drop_last: bool = False) -> int:
    n = data if isinstance(data, int) else len(data)
    if batch_size < 1:
        raise KdlabError(f"batch size {batch_size} is invalid: use a positive integer")
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    generator: torch.Generator | None,
    shuffle: bool,
    augment: bool,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[IndexedBatch]:
    """Yield ``(images float32 in [0, 1], labels int64)`` batches (:class:`~kdlab.runtime.sample_random.IndexedBatch`:
    they also carry ``indices``, each sample's position in ``data``).

    With ``shuffle`` the order is ``torch.randperm(len(data), generator=generator)`` drawn once at the start;
    with ``augment`` every batch gets :func:`random_crop_flip` from the same generator, so the whole epoch is a
    function of the generator's state -- or, when the generator is a :class:`~kdlab.runtime.sample_random.SampleGenerator`
    (``train.rng: sample``), :func:`sample_crop_flip`, a function of each sample's index alone.
    ``device``: uint8 batches are moved there before augmentation. A set already on the device
    (:func:`on_device`) is indexed there: the epoch's order is copied to it once. ``shard=(rank, world)``: batch
    ``b`` is still positions ``[b * batch_size, (b + 1) * batch_size)`` of the order, and this process takes the
    ``rank``-th of its ``world`` equal parts (multi-process training: ``batch_size`` is the global batch).
    """
    rank, world = shard
    if batch_size % world:
        raise KdlabError(f"data.batch_size {batch_size} does not split evenly over {world} processes: use a "
                         f"multiple of {world} (e.g. --set data.batch_size={batch_size // world * world or world})")
    local = batch_size // world
    total = num_batches(data, batch_size, drop_last)
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if data.images.device.type != "cpu":
        order = to_device(order, data.images.device)  # once per epoch, not per batch
    keyed = per_sample(generator)
    for b in range(total):
        start = min(n, b * batch_size + rank * local)
        idx = order[start:min(start + local, (b + 1) * batch_size, n)]
        images, labels = data.images[idx], data.labels[idx]
        if device is not None:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if not augment:
            images = to_float(images)
        elif keyed is not None:
            images = sample_crop_flip(images, keyed, idx)
        else:
            images = random_crop_flip(images, generator)
        yield IndexedBatch(images, labels, idx)


def on_device(data: ImageSet, device: torch.device | str) -> ImageSet:
    """``data`` held on ``device`` (uint8 images and labels copied once): batches are then cut, cropped, flipped
    and mixed there, with no per-batch host-to-device copy of images and no loader processes. Full CIFAR-10
    is 150 MB of uint8 on the GPU."""
    device = torch.device(device)
    if data.images.device == device and data.labels.device == device:
        return data
    return ImageSet(data.images.to(device), data.labels.to(device))

