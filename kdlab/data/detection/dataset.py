"""The detection dataset type shared by the VOC, COCO and synthetic loaders; image helpers, flips, batching.

Representation (what every loader returns and what torchvision detectors consume):

* ``DetectionDataset[i]`` is a :class:`DetectionSample` ``(image, target)``;
* ``image``: float32 tensor ``3 x H x W`` with values in ``[0, 1]`` (torchvision's detection transform
  normalises with the ImageNet mean/std *inside* the model, so inputs are never normalised here);
* ``target``: ``{"boxes": float32 N x 4 (x1, y1, x2, y2) in absolute pixels of the stored image,
  "labels": int64 N (1-based: 1..K; 0 is torchvision's background class), "image_id": int}``: the
  training target, without crowd regions.

The evaluation ground truth (:meth:`DetectionDataset.ground_truth`, what COCO AP is computed against) adds,
for COCO jsons: ``"area"`` (float64 N, the annotation's ``area`` -- the segment's, which decides the
small/medium/large bin -- scaled with the image) and the crowd regions (``iscrowd=1``) as ``"crowd_boxes"``
(M x 4), ``"crowd_labels"`` (M) and ``"crowd_area"`` (M). pycocotools ignores detections matched to a crowd
region (neither true nor false positives); the detector never trains on them.

By default images are decoded once and kept in memory as uint8 (BCCD: 364 images at 640x480 is ~330 MB,
or ~50 MB at ``image_size=256``); with ``in_memory=False`` (VOC and COCO) only paths and sizes are kept and
each image is decoded when it is used, so COCO train2017 (118k images, ~110 GB as uint8 at 800x1333)
needs no more memory than its annotations. ``image_size`` resizes each image so its *longest* side equals
``image_size`` (aspect ratio kept, boxes scaled with it); give the detector ``max_size=image_size`` and
``min_size`` equal to the shorter side so its own transform does not resize again.

Degenerate boxes (zero or negative width or height after clipping to the image) are dropped with a
:class:`DegenerateBoxWarning` naming the file and the count; loading never crashes on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.errors import KdlabError

__all__ = [
    "DegenerateBoxWarning",
    "DetectionData",
    "DetectionDataset",
    "DetectionSample",
    "ImageFiles",
    "clean_boxes",
    "empty_boxes",
    "horizontal_flip",
    "image_files_or_tensors",
    "iterate_detection_batches",
    "make_target",
    "original_size",
    "resize_to_max_side",
    "scale_boxes",
    "target_size",
]


class DegenerateBoxWarning(UserWarning):
    """A box with zero or negative width/height was dropped while loading annotations."""


class DetectionSample(NamedTuple):
    image: Tensor  # float32 3 x H x W in [0, 1]
    target: dict[str, Any]  # boxes (N x 4 xyxy float32), labels (N int64, 1-based), image_id (int)


def empty_boxes() -> Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


def make_target(boxes: Any, labels: Any, image_id: int) -> dict[str, Any]:
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    return {"boxes": boxes_t, "labels": labels_t, "image_id": int(image_id)}


class ImageFiles(Sequence[Tensor]):
    """Images on disk, decoded (and resized to longest side ``image_size``) when indexed: a lazy stand-in
    for a list of uint8 ``3 x H x W`` tensors. ``originals`` are the files' ``(height, width)``, read
    from their headers when the split was loaded (the boxes were scaled with them)."""

    def __init__(
        self, paths: Sequence[Path], originals: Sequence[tuple[int, int]], image_size: int | None
    ) -> None:
        self.paths = list(paths)
        self.originals = list(originals)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        path, expected = self.paths[index], self.originals[index]
        pil, original = _decode_image(path, self.image_size)
        if original != expected:
            raise KdlabError(
                f"image '{path}' changed size since its split was loaded ({expected} -> {original}): "
                "reload the data"
            )
        return _to_uint8_tensor(pil, original, self.image_size)

    def select(self, indices: Sequence[int]) -> ImageFiles:
        paths, originals = [self.paths[i] for i in indices], [self.originals[i] for i in indices]
        return ImageFiles(paths, originals, self.image_size)


def image_files_or_tensors(paths: list[Path], originals: list[tuple[int, int]], image_size: int | None,
                            in_memory: bool) -> Sequence[Tensor]:
    files = ImageFiles(paths, originals, image_size)
    return [files[i] for i in range(len(files))] if in_memory else files


def original_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the image header alone (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            return handle.height, handle.width
    except (OSError, UnidentifiedImageError) as error:
        raise KdlabError(f"cannot decode image '{path}' ({error}): replace or remove the file") from None


class DetectionDataset:
    """A detection split: uint8 images (a list in memory, or :class:`ImageFiles` read on use), targets
    and class names.

    Label ``i`` (1-based) is ``class_names[i - 1]``.
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        targets: Sequence[dict[str, Any]],
        class_names: Sequence[str],
        names: Sequence[str] | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images if isinstance(images, ImageFiles) else list(images)
        self.targets = list(targets)
        self.class_names = list(class_names)
        self.names = list(names) if names is not None else [str(t["image_id"]) for t in self.targets]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> DetectionSample:
        """The image in ``[0, 1]`` and its training target (``boxes``, ``labels``, ``image_id``; no crowd)."""
        target = self.targets[index]
        image = self.images[index].to(torch.float32).div_(255.0)
        return DetectionSample(
            image,
            {
                "boxes": target["boxes"].clone(),
                "labels": target["labels"].clone(),
                "image_id": target["image_id"],
            },
        )

    def ground_truth(self, index: int) -> dict[str, Any]:
        """Image ``index``'s evaluation ground truth: the training target plus, where the annotations give
        them, ``area`` and the crowd regions (``crowd_boxes``, ``crowd_labels``, ``crowd_area``)."""
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in self.targets[index].items()}

    @property
    def num_classes(self) -> int:
        """Foreground classes K (a torchvision Faster R-CNN needs ``num_classes=K + 1``)."""
        return len(self.class_names)

    @property
    def num_boxes(self) -> int:
        return sum(int(t["boxes"].shape[0]) for t in self.targets)

    def subset(self, indices: Sequence[int]) -> DetectionDataset:
        indices = [int(i) for i in indices]
        images = self.images
        return DetectionDataset(
            images.select(indices) if isinstance(images, ImageFiles) else [images[i] for i in indices],
            [self.targets[i] for i in indices],
            self.class_names,
            [self.names[i] for i in indices],
        )

    def __repr__(self) -> str:
        return f"DetectionDataset({len(self)} images, {self.num_boxes} boxes, classes={self.class_names})"


@dataclass
class DetectionData:
    """Train/val/test splits of one detection dataset. ``val``/``test`` are None when not available."""

    train: DetectionDataset
    val: DetectionDataset | None
    test: DetectionDataset | None
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Foreground classes K; torchvision Faster R-CNN / RetinaNet are built with ``K + 1``."""
        return len(self.class_names)


# --------------------------------------------------------------------------- image helpers
def target_size(height: int, width: int, image_size: int | None) -> tuple[int, int]:
    """``(new_h, new_w)`` with the longest side equal to ``image_size`` (unchanged when None)."""
    if image_size is None:
        return height, width
    scale = image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scale_boxes(boxes: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> Tensor:
    if old_hw == new_hw:
        return boxes
    sy, sx = new_hw[0] / old_hw[0], new_hw[1] / old_hw[1]
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)


def _decode_image(path: Path, image_size: int | None = None) -> tuple[Any, tuple[int, int]]:
    """Open an image as RGB Pillow image; return it and its original ``(height, width)``.

    With ``image_size``, JPEGs are decoded at a reduced DCT scale no smaller than the final size
    (Pillow's ``draft``), which is several times cheaper. torchvision.io decoding is deprecated in 0.29.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            original = (handle.height, handle.width)
            if image_size is not None:
                new_h, new_w = target_size(handle.height, handle.width, image_size)
                handle.draft("RGB", (new_w, new_h))
            return handle.convert("RGB"), original
    except (OSError, UnidentifiedImageError) as error:
        raise KdlabError(f"cannot decode image '{path}' ({error}): replace or remove the file") from None


def _to_uint8_tensor(image: Any, original: tuple[int, int], image_size: int | None) -> Tensor:
    """A Pillow RGB image resized (bilinear, antialiased) to longest side ``image_size`` of ``original``
    ``(height, width)``, as uint8 3 x H x W."""
    from PIL import Image

    new_h, new_w = target_size(*original, image_size)
    if (new_h, new_w) != (image.height, image.width):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def resize_to_max_side(image: Tensor, boxes: Tensor, image_size: int | None) -> tuple[Tensor, Tensor]:
    """Resize a uint8 ``3 x H x W`` image so its longest side is ``image_size``; scale xyxy boxes alike."""
    height, width = image.shape[-2:]
    new_hw = target_size(height, width, image_size)
    if new_hw == (height, width):
        return image, boxes
    resized = F.interpolate(
        image[None].float(), size=new_hw, mode="bilinear", align_corners=False, antialias=True
    )[0]
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized, scale_boxes(boxes, (height, width), new_hw)


def clean_boxes(boxes: list[list[float]], width: int, height: int, source: str) -> tuple[Tensor, Tensor]:
    """Clip boxes to the image; return them and the mask of the non-degenerate ones (one warning per file
    for the others)."""
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if boxes_t.numel():
        boxes_t[:, 0::2] = boxes_t[:, 0::2].clamp(0, width)
        boxes_t[:, 1::2] = boxes_t[:, 1::2].clamp(0, height)
    keep = (boxes_t[:, 2] > boxes_t[:, 0]) & (boxes_t[:, 3] > boxes_t[:, 1])
    dropped = int((~keep).sum())
    if dropped:
        warnings.warn(
            f"{source}: dropped {dropped} degenerate box{'es' if dropped > 1 else ''} "
            "(zero or negative width/height)",
            DegenerateBoxWarning,
            stacklevel=3,
        )
    return boxes_t, keep


# --------------------------------------------------------------------------- augmentation and batching
def horizontal_flip(image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """Mirror an image (``... x H x W``) left-right and its xyxy boxes: ``x1' = W - x2``, ``x2' = W - x1``."""
    width = image.shape[-1]
    flipped = dict(target)
    boxes = target["boxes"]
    if boxes.numel():
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    flipped["boxes"] = boxes
    return image.flip(-1), flipped


def epoch_plan(n: int, generator: torch.Generator | None, shuffle: bool, augment: bool
               ) -> tuple[list[int], list[bool]]:
    """An epoch's image order and flips, drawn from ``generator`` in this order (order, then flips): the one
    draw shared by :func:`iterate_detection_batches` and the worker loader (``kdlab.data.detection.loader``)."""
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    flips = (torch.rand(n, generator=generator) < 0.5).tolist() if augment else [False] * n
    return order, flips


def iterate_detection_batches(
    dataset: DetectionDataset,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = False,
    augment: bool = False,
) -> Iterator[tuple[list[Tensor], list[dict[str, Any]]]]:
    """Yield ``(images, targets)`` lists of at most ``batch_size`` (the last batch may be smaller).

    Order (``shuffle``) and flips (``augment``: horizontal flip with p=0.5) are drawn from ``generator``
    once per call, so the same generator state gives the same batches.
    """
    if batch_size <= 0:
        raise KdlabError(f"batch_size must be positive (got {batch_size})")
    n = len(dataset)
    order, flips = epoch_plan(n, generator, shuffle, augment)
    for start in range(0, n, batch_size):
        images, targets = [], []
        for position in range(start, min(start + batch_size, n)):
            image, target = dataset[order[position]]
            if flips[position]:
                image, target = horizontal_flip(image, target)
            images.append(image)
            targets.append(target)
        yield images, targets
