"""``embedded``: a stratified real CIFAR-10 subset shipped in the package; needs no network or files.

5000 train images (500/class) and 1000 test images (100/class), their original JPEG bytes in
``kdlab/data/assets/cifar10_embedded.npz``, built by ``scripts/build_embedded_cifar10.py``. The plan check reads
its split sizes from the asset's label arrays, not its JPEG bytes (:func:`plan_sizes`); it is normalised with
CIFAR-10's statistics (:mod:`kdlab.config.datasets`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config.datasets import DATASETS
from kdlab.data.classification import ClassificationData, ImageSet
from kdlab.data.decode import decode_many
from kdlab.data.splits import plan_splits
from kdlab.errors import KdlabError

__all__ = ["EMBEDDED_ASSET", "load_embedded", "plan_sizes"]

EMBEDDED_ASSET = Path(__file__).resolve().parent / "assets" / "cifar10_embedded.npz"


def load_embedded(dataset: str, root: str | None, download: bool, subset, val_size, test_subset,
                  seed) -> ClassificationData:
    """The packaged subset (``dataset``, ``root`` and ``download``: unused, the loader signature of
    :mod:`kdlab.data.loaders`)."""
    if not EMBEDDED_ASSET.is_file():
        raise KdlabError(f"the embedded CIFAR-10 asset {EMBEDDED_ASSET} is missing: reinstall kdlab, or rebuild it "
                         "with scripts/build_embedded_cifar10.py")
    with np.load(EMBEDDED_ASSET, allow_pickle=False) as archive:
        buffer = torch.from_numpy(archive["jpeg_bytes"].copy())
        offsets = archive["offsets"].tolist()
        labels = torch.from_numpy(archive["labels"].astype(np.int64))
        split = torch.from_numpy(archive["split"].astype(np.int64))
        classes = [c.decode() for c in archive["classes"].tolist()]
    train_pos = torch.nonzero(split == 0).flatten()
    test_pos = torch.nonzero(split == 1).flatten()
    train_idx, val_idx, test_idx = plan_splits("embedded", labels[train_pos], labels[test_pos], len(classes),
                                               subset, val_size, test_subset, seed)

    def load(positions: torch.Tensor) -> ImageSet:
        pos = positions.tolist()
        blobs = [buffer[offsets[i]:offsets[i + 1]] for i in pos]
        return ImageSet(decode_many(blobs, [f"embedded #{i}" for i in pos]), labels[positions])

    train = load(train_pos[train_idx])
    val = load(train_pos[val_idx]) if len(val_idx) else None
    test = load(test_pos[test_idx])
    return ClassificationData(train, val, test, classes, name="embedded")


def plan_sizes(spec: Any) -> tuple[int, int, int, tuple[int, int, int]]:
    """(train images, test images, classes, image shape) of the packaged asset: only its label arrays are read."""
    if not EMBEDDED_ASSET.is_file():
        raise KdlabError(f"data.dataset: the embedded CIFAR-10 asset {EMBEDDED_ASSET} is missing: reinstall kdlab")
    with np.load(EMBEDDED_ASSET, allow_pickle=False) as archive:  # only these arrays are read
        split = archive["split"]
        classes = len(archive["classes"])
    return int((split == 0).sum()), int((split == 1).sum()), classes, DATASETS["embedded"].image_shape
