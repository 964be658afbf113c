"""Input normalisation statistics follow the data: per-channel mean and std for a classifier.

The statistics live inside the model (:class:`kdlab.models.registry.ImageClassifier` buffers), so attacks,
mixup and distillation losses all work on [0, 1] images and a teacher and a student trained with different
statistics see the same images. They are chosen, in order:

1. ``model.mean`` / ``model.std`` (or ``student.*``) written in the recipe, as lists;
2. the dataset's published statistics, a column of the facts table (:mod:`kdlab.config.datasets`): CIFAR-10 for
   ``cifar10`` and ``embedded`` (a CIFAR-10 subset), CIFAR-100 for ``cifar100`` (population statistics of the
   training images);
3. for ``imagefolder``: computed from the training images the run loaded (after ``val_size`` and ``subset``;
   exact population mean and std per channel, a pass over tensors already in memory, so nothing to cache).

The checkpoint records the statistics it was trained with (``kdlab.models.files``), and ``kdlab eval`` rebuilds
the model with them; checkpoints written before they were recorded load with the old CIFAR-10 default. What a run
key records about the statistics is the table's ``key_marker`` (:func:`kdlab.config.datasets.key_marker`), so
computing a key imports no torch.
"""

from __future__ import annotations

from typing import Any

import torch

from kdlab.config.datasets import DATASETS

# Datasets with published statistics (the facts table's); the rest (imagefolder) are measured on their training split.
PUBLISHED = {name: facts.statistics for name, facts in DATASETS.items() if facts.statistics is not None}


def measure(images_uint8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel population mean and std of uint8 N x C x H x W images, in [0, 1] units (float64 sums)."""
    if images_uint8.numel() == 0:
        raise ValueError("no images to measure")
    pixels = images_uint8.permute(1, 0, 2, 3).reshape(images_uint8.shape[1], -1).to(torch.float64) / 255
    mean = pixels.mean(dim=1)
    std = pixels.std(dim=1, unbiased=False)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def statistics(dataset: str, train_images: torch.Tensor) -> dict[str, Any]:
    """``{"mean": [...], "std": [...]}`` for a dataset: its published statistics or measured ones."""
    if dataset in PUBLISHED:
        mean, std = PUBLISHED[dataset]
    else:
        mean, std = measure(train_images)
    return {"mean": list(mean), "std": list(std)}


def model_options(spec: Any, dataset: str, train_images: torch.Tensor) -> dict[str, Any]:
    """The model builder's options: the recipe's, with mean/std from the data where the recipe sets none."""
    options = spec.build_options()
    if "mean" in options and "std" in options:
        return options
    return {**statistics(dataset, train_images), **options}
