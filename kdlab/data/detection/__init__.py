"""Detection data: Pascal VOC, COCO-format JSON and a synthetic-shapes set, and :func:`load_detection_data`,
which loads a recipe's train/val/test splits.

Modules: :mod:`~kdlab.data.detection.dataset` (the representation every loader returns, flips, batching),
:mod:`~kdlab.data.detection.voc`, :mod:`~kdlab.data.detection.coco`, :mod:`~kdlab.data.detection.synthetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from kdlab.config.names import DETECTION_DATASETS
from kdlab.data.detection.coco import load_coco, resolve_annotation_path
from kdlab.data.detection.dataset import (
    DegenerateBoxWarning,
    DetectionData,
    DetectionDataset,
    DetectionSample,
    ImageFiles,
    horizontal_flip,
    iterate_detection_batches,
    resize_to_max_side,
)
from kdlab.data.detection.synthetic import DEFAULT_IMAGE_SIZE, default_test_images, make_synthetic_shapes
from kdlab.data.detection.voc import load_voc, voc_class_names, voc_root
from kdlab.errors import KdlabError

__all__ = [
    "DATASETS",
    "DegenerateBoxWarning",
    "DetectionData",
    "DetectionDataset",
    "DetectionSample",
    "ImageFiles",
    "horizontal_flip",
    "iterate_detection_batches",
    "load_coco",
    "load_detection_data",
    "load_voc",
    "make_synthetic_shapes",
    "resize_to_max_side",
    "voc_class_names",
]

DATASETS = DETECTION_DATASETS


def _pick(n: int, k: int, seed: int, salt: int) -> tuple[list[int], list[int]]:
    """A seeded random choice of ``k`` of ``range(n)`` (sorted) and the sorted rest."""
    generator = torch.Generator().manual_seed(seed * 7919 + salt)
    order = torch.randperm(n, generator=generator).tolist()
    return sorted(order[:k]), sorted(order[k:])


def load_detection_data(
    dataset: str,
    root: str | Path | None = None,
    *,
    image_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    val_size: int = 0,
    test_subset: int | None = None,
    train_split: str = "train",
    val_split: str | None = None,
    test_split: str | None = "test",
    annotations: str | Path | None = None,
    val_annotations: str | Path | None = None,
    test_annotations: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    num_images: int = 96,
    num_test_images: int | None = None,
    num_classes: int = 3,
    in_memory: bool = True,
) -> DetectionData:
    """Load train/val/test detection splits (``in_memory=False``: VOC/COCO images are read when used).

    * ``voc``: ``root`` holds ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` (or has one
      such subfolder, e.g. ``../shared/data/bccd``); ``train_split``/``val_split``/``test_split`` name the
      split files (``None`` skips one).
    * ``coco``: ``annotations`` (train), ``val_annotations``, ``test_annotations`` are COCO jsons (relative
      paths resolve against ``root``); images are found under ``root/<split name>/`` if that folder exists,
      else ``root``, else next to the json.
    * ``synthetic``: ``num_images`` train images (seed ``seed``) and ``num_test_images`` (default
      ``max(16, num_images // 4)``) test images from a different stream; ``image_size`` defaults to 128.

    Then, in this order: ``val_size > 0`` holds out that many seeded-random train images as ``val``
    (replacing any val split); ``subset`` keeps that many seeded-random train images; ``test_subset``
    keeps that many test images. Labels are 1..K with ``class_names`` order shared by all splits.
    """
    if dataset not in DATASETS:
        raise KdlabError(f"unknown detection dataset '{dataset}': choose one of {', '.join(DATASETS)}")
    val: DetectionDataset | None = None
    test: DetectionDataset | None = None
    if dataset == "synthetic":
        size = image_size or DEFAULT_IMAGE_SIZE
        train = make_synthetic_shapes(num_images, size, seed=seed, num_classes=num_classes)
        n_test = num_test_images if num_test_images is not None else default_test_images(num_images)
        # a different stream: seeds are offset far away from the train seed
        test = make_synthetic_shapes(n_test, size, seed=seed + 1_000_003, num_classes=num_classes)
        if test_split is None:
            test = None
    elif dataset == "voc":
        if root is None:
            raise KdlabError(
                "dataset 'voc' needs data.root: the folder with Annotations/, JPEGImages/, ImageSets/Main/"
            )
        voc = voc_root(root)
        names = list(class_names) if class_names is not None else voc_class_names(voc)
        train = load_voc(voc, train_split, names, image_size, in_memory)
        if val_split is not None and val_size == 0:
            val = load_voc(voc, val_split, names, image_size, in_memory)
        if test_split is not None:
            test = load_voc(voc, test_split, names, image_size, in_memory)
    else:  # coco
        base = Path(root) if root is not None else None
        if base is not None and not base.is_dir():
            raise KdlabError(f"COCO root '{root}' does not exist: point data.root at the image folder")
        if annotations is None:
            raise KdlabError("dataset 'coco' needs data.annotations: the COCO json of the train split")

        def coco_split(json_path: str | Path, split: str | None) -> DetectionDataset:
            resolved = resolve_annotation_path(base, json_path)
            folder = base if base is not None else resolved.parent
            if base is not None and split and (base / split).is_dir():
                folder = base / split
            return load_coco(folder, resolved, image_size, in_memory)

        train = coco_split(annotations, train_split)
        if val_annotations is not None and val_size == 0:
            val = coco_split(val_annotations, val_split)
        if test_annotations is not None:
            test = coco_split(test_annotations, test_split)
        for split_name, split_data in (("val", val), ("test", test)):
            if split_data is not None and split_data.class_names != train.class_names:
                raise KdlabError(
                    f"COCO {split_name} categories {split_data.class_names} differ from train's "
                    f"{train.class_names}: use jsons that share one categories list"
                )
        if class_names is not None and list(class_names) != train.class_names:
            raise KdlabError(
                f"class_names {list(class_names)} do not match the json categories {train.class_names}"
            )

    if val_size > 0:
        if val_size >= len(train):
            raise KdlabError(f"val_size={val_size} must be smaller than the {len(train)} train images")
        held, rest = _pick(len(train), val_size, seed, salt=1)
        val, train = train.subset(held), train.subset(rest)
    if subset is not None and subset < len(train):
        kept, _ = _pick(len(train), subset, seed, salt=2)
        train = train.subset(kept)
    if test is not None and test_subset is not None and test_subset < len(test):
        kept, _ = _pick(len(test), test_subset, seed, salt=3)
        test = test.subset(kept)
    return DetectionData(train=train, val=val, test=test, class_names=list(train.class_names))
