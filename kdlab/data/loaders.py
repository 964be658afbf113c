"""Which code reads each dataset of the facts table (:mod:`kdlab.config.datasets`): one registration line per dataset.

:data:`LOADERS`: the loader of each classification dataset, which :func:`load_classification_data` (and
:func:`load_data_spec`, for a recipe's ``data:`` section) calls by name. Every loader has one signature,
``load(dataset, root, download, subset, val_size, test_subset, seed) -> ClassificationData``, and chooses its
images with :func:`kdlab.data.splits.plan_splits`. Detection datasets are loaded by
:func:`kdlab.data.detection.load_detection_data`.

:data:`PLAN_SIZES`: for the plan check (:mod:`kdlab.check.data`), the datasets whose sizes the facts table leaves
open, each read cheaply (never decoding an image) by a function beside its loader:
``plan_sizes(data_spec) -> (train images, test images or None, classes, C x H x W or None)``, raising
:class:`~kdlab.errors.KdlabError` with one line naming the key and the fix. The other datasets' sizes are the
table's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdlab.config.names import CLASSIFICATION_DATASETS
from kdlab.data import cifar, embedded, imagefolder
from kdlab.data.classification import ClassificationData
from kdlab.data.detection import coco, synthetic, voc
from kdlab.errors import KdlabError, did_you_mean

__all__ = ["LOADERS", "PLAN_SIZES", "load_classification_data", "load_data_spec"]

LOADERS: dict[str, Callable[..., ClassificationData]] = {
    "cifar10": cifar.load_cifar,
    "cifar100": cifar.load_cifar,
    "imagefolder": imagefolder.load_imagefolder,
    "embedded": embedded.load_embedded,
}

PLAN_SIZES: dict[str, Callable[[Any], tuple]] = {
    "imagefolder": imagefolder.plan_sizes,
    "embedded": embedded.plan_sizes,
    "voc": voc.plan_sizes,
    "coco": coco.plan_sizes,
    "synthetic": synthetic.plan_sizes,
}


def _check_count(name: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KdlabError(f"data.{name}={value!r} is invalid: use an integer >= {minimum}")


def load_classification_data(
    dataset: str,
    root: str | None = None,
    download: bool = False,
    subset: int | None = None,
    val_size: int = 0,
    test_subset: int | None = None,
    seed: int = 0,
) -> ClassificationData:
    """Load ``dataset`` into memory as uint8 tensors; the splits as :mod:`kdlab.data.splits` describes."""
    name = str(dataset).strip().lower()
    if name not in LOADERS:
        valid = CLASSIFICATION_DATASETS
        raise KdlabError(f"unknown dataset '{dataset}'{did_you_mean(name, valid)}: valid datasets are {', '.join(valid)}")
    _check_count("subset", subset, 1)
    _check_count("val_size", val_size, 0)
    _check_count("test_subset", test_subset, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KdlabError(f"data seed {seed!r} is invalid: use a non-negative integer")
    return LOADERS[name](name, root, download, subset, val_size, test_subset, seed)


def load_data_spec(spec) -> ClassificationData:
    """The data a recipe's ``data:`` section (:class:`kdlab.config.sections.DataSpec`) names; the subset, validation
    and test selection are fixed by ``spec.split_seed``, not the run seed."""
    return load_classification_data(
        spec.dataset, root=spec.root, download=spec.download, subset=spec.subset,
        val_size=spec.val_size, test_subset=spec.test_subset, seed=spec.split_seed,
    )
