"""A deterministic synthetic-shapes detection set, generated in memory (tests and CPU smoke runs)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from kdlab.config.datasets import DATASETS
from kdlab.data.detection.dataset import DetectionDataset, empty_boxes, make_target
from kdlab.errors import KdlabError

__all__ = ["DEFAULT_IMAGE_SIZE", "SHAPES", "default_test_images", "make_synthetic_shapes", "plan_sizes"]


SHAPES = ("square", "disc", "triangle")
DEFAULT_IMAGE_SIZE = 128  # data.image_size unset
_PALETTE = ((0.85, 0.20, 0.15), (0.15, 0.70, 0.25), (0.20, 0.35, 0.90))


def _class_style(label: int) -> tuple[str, tuple[float, float, float], tuple[float, float]]:
    """Shape, colour and size range (fraction of the image side) of 1-based class ``label``."""
    k = label - 1
    shape = SHAPES[k % 3]
    if k < len(_PALETTE):
        colour = _PALETTE[k]
    else:  # more classes: spread hues
        hue = (k * 0.618034) % 1.0
        colour = tuple(float(0.5 + 0.4 * math.cos(2 * math.pi * (hue + s / 3))) for s in range(3))
    base = {"square": 0.16, "disc": 0.12, "triangle": 0.20}[shape] * (1 + 0.35 * (k // 3))
    return shape, colour, (base, base * 1.6)


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    centres = np.arange(size) + 0.5
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "disc":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    # triangle, apex up or down
    frac_y = yy / size
    half = np.where(rng.random() < 0.5, frac_y, 1 - frac_y) / 2
    return np.abs(xx - size / 2) <= half * size + 0.5


def _synthetic_image(
    rng: np.random.Generator, image_size: int, num_classes: int
) -> tuple[np.ndarray, list, list]:
    s = image_size
    ys, xs = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
    base = rng.uniform(0.3, 0.6)
    texture = np.zeros((s, s))
    for _ in range(3):
        fx, fy = rng.uniform(1, 6, size=2)
        texture += np.sin(2 * np.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * np.pi))
    background = base + 0.05 * texture[..., None] + rng.uniform(-0.05, 0.05, size=3)
    image = background + rng.normal(0, 0.04, size=(s, s, 3))

    boxes: list[list[float]] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, num_classes + 1))
        shape, colour, (lo, hi) = _class_style(label)
        size = max(6, round(rng.uniform(lo, hi) * s))
        size = min(size, s - 2)
        for _attempt in range(30):
            x0 = int(rng.integers(0, s - size + 1))
            y0 = int(rng.integers(0, s - size + 1))
            if all(
                x0 >= b[2] + 1 or x0 + size + 1 <= b[0] or y0 >= b[3] + 1 or y0 + size + 1 <= b[1]
                for b in boxes
            ):
                break
        else:
            continue
        mask = _shape_mask(shape, size, rng)
        rows, cols = np.nonzero(mask)
        shade = np.asarray(colour) + rng.uniform(-0.08, 0.08, size=3)
        patch = shade + rng.normal(0, 0.03, size=(size, size, 3))
        region = image[y0 : y0 + size, x0 : x0 + size]
        region[mask] = patch[mask]
        boxes.append([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1])
        labels.append(label)
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return pixels, boxes, labels


def make_synthetic_shapes(
    num_images: int, image_size: int = 128, seed: int = 0, num_classes: int = 3
) -> DetectionDataset:
    """A deterministic synthetic detection set generated in memory (no files).

    Each image is a textured, noisy background with 1-4 non-overlapping objects; class ``c`` (1-based)
    is a square / disc / triangle (cycling) in a class-specific colour and size band. Boxes are the tight
    pixel extent of each shape. Image ``i`` depends only on ``(seed, i)``, so a smaller set is a prefix of
    a larger one. Class names are ``square``, ``disc``, ``triangle`` (then ``square2``, ...).
    """
    if num_images <= 0 or image_size < 16 or num_classes < 1:
        raise KdlabError(
            f"synthetic shapes need num_images > 0, image_size >= 16 and num_classes >= 1 "
            f"(got {num_images}, {image_size}, {num_classes})"
        )
    images, targets = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        pixels, boxes, labels = _synthetic_image(rng, image_size, num_classes)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
        targets.append(make_target(boxes if boxes else empty_boxes(), labels, i))
    class_names = [SHAPES[k % 3] + (str(k // 3 + 1) if k >= 3 else "") for k in range(num_classes)]
    return DetectionDataset(
        images, targets, class_names, [f"synthetic_{seed}_{i}" for i in range(num_images)]
    )


def default_test_images(num_images: int) -> int:
    """Test images when ``data.num_test_images`` is unset: a quarter of the training images, at least 16."""
    return max(16, num_images // 4)


def plan_sizes(spec: Any) -> tuple[int, int, int, tuple[int, int, int]]:
    """(train images, test images, classes, image shape) a recipe's synthetic set will have, from the recipe."""
    size = spec.image_size or DEFAULT_IMAGE_SIZE
    if size < 16:
        raise KdlabError(f"data.image_size: synthetic shapes need images of at least 16 px (got {size}): "
                         "set data.image_size to 16 or more")
    test = spec.num_test_images or default_test_images(spec.num_images)
    return spec.num_images, test, DATASETS["synthetic"].classes, (3, size, size)
