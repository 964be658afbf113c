"""``cifar10`` / ``cifar100``: the official python batches, read through torchvision (``data.root``, ``data.download``).

The whole training and test splits are held in memory (50,000 / 10,000 images of 32x32); their class counts,
split sizes, folder and normalisation statistics are rows of :mod:`kdlab.config.datasets`, which the plan
check reads without loading anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdlab.config.datasets import DATASETS, DEFAULT_ROOT
from kdlab.data.classification import ClassificationData, ImageSet
from kdlab.data.splits import plan_splits
from kdlab.errors import KdlabError

__all__ = ["load_cifar"]

# name -> (the archive its download fetches, the torchvision.datasets class that reads it)
_TORCHVISION = {
    "cifar10": ("cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": ("cifar-100-python.tar.gz", "CIFAR100"),
}


def load_cifar(dataset: str, root: str | None, download: bool, subset, val_size, test_subset,
               seed) -> ClassificationData:
    """CIFAR-10 or CIFAR-100 (``dataset``) from ``root`` (default ``./data``), downloaded there if ``download``."""
    title, folder = DATASETS[dataset].title, DATASETS[dataset].folder
    archive, cls_name = _TORCHVISION[dataset]
    base = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    if not download and not (base / folder).is_dir():
        raise KdlabError(f"{title} not found under {base}: set data.download: true (needs internet) or data.root "
                         f"to a folder containing {folder}")
    import torchvision.datasets

    dataset_cls = getattr(torchvision.datasets, cls_name)
    splits = {}
    for train in (True, False):
        try:
            splits[train] = dataset_cls(root=str(base), train=train, download=download)
        except Exception as error:  # noqa: BLE001 - never let a torchvision traceback reach the user
            detail = " ".join(str(error).split())[:200]
            if download:
                raise KdlabError(f"could not download {title} into {base} ({type(error).__name__}: {detail}): "
                                 f"check the internet connection, or extract {archive} under {base} yourself "
                                 "and set data.download: false") from None
            raise KdlabError(f"{title} under {base / folder} is incomplete or corrupted ({detail}): delete that "
                             "folder and set data.download: true, or replace it with a complete copy") from None
    classes = list(splits[True].classes)

    def to_set(ds) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

    train_images, train_labels = to_set(splits[True])
    test_images, test_labels = to_set(splits[False])
    train_idx, val_idx, test_idx = plan_splits(dataset, train_labels, test_labels, len(classes), subset,
                                               val_size, test_subset, seed)
    full_train = ImageSet(train_images, train_labels)
    val = full_train.select(val_idx) if len(val_idx) else None
    return ClassificationData(full_train.select(train_idx), val,
                              ImageSet(test_images, test_labels).select(test_idx), classes, name=dataset)
