"""COCO-format detection jsons (``images``, ``annotations``, ``categories``) and their images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from kdlab.data.detection.dataset import (
    DetectionDataset,
    clean_boxes,
    image_files_or_tensors,
    make_target,
    original_size,
    scale_boxes,
    target_size,
)
from kdlab.errors import KdlabError

__all__ = ["load_coco", "plan_sizes", "resolve_annotation_path"]


def resolve_annotation_path(root: Path | None, path: str | Path) -> Path:
    """A COCO annotation file as given when absolute or existing, else relative to the dataset root."""
    candidate = Path(path)
    if candidate.is_absolute() or root is None or candidate.exists():
        return candidate
    return root / candidate


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KdlabError(f"COCO annotation file '{path}' not found: give the path to the instances json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise KdlabError(f"'{path}' is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise KdlabError(
            f"'{path}' is not COCO detection json: expected keys images, annotations, categories"
        )
    return data


def load_coco(
    images_dir: str | Path,
    annotation_json: str | Path,
    image_size: int | None = None,
    in_memory: bool = True,
) -> DetectionDataset:
    """Load a COCO-format detection json and its images.

    Category ids are mapped to contiguous labels 1..K in increasing id order (taken from ``categories``,
    so splits sharing a category list share a mapping); class names are the category names. ``bbox``
    ``[x, y, w, h]`` becomes ``[x1, y1, x2, y2]``; degenerate boxes are dropped with a warning. Crowd
    annotations (``iscrowd=1``) are kept apart (``crowd_boxes``/``crowd_labels``/``crowd_area``) for the
    evaluation ground truth only, never as training boxes; ``area`` is the annotation's ``area`` (the box
    area when absent), multiplied by the resize's ``sx * sy``, as in pycocotools' COCOeval
    (``cocoapi/PythonAPI/pycocotools/cocoeval.py``: crowd matches ignored, size bins from ``area``).
    Each image's ``file_name`` is looked up under ``images_dir`` and then next to the json. ``image_id``
    is the json's image id; images without annotations are kept (empty targets).
    """
    json_path = Path(annotation_json)
    data = _read_json(json_path)
    folder = Path(images_dir)
    if not folder.is_dir():
        raise KdlabError(
            f"COCO image folder '{images_dir}' not found: point it at the folder holding the images"
        )
    categories = data.get("categories") or []
    if categories:
        category_ids = sorted(int(c["id"]) for c in categories)
        category_names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    else:
        category_ids = sorted({int(a["category_id"]) for a in data["annotations"]})
        category_names = {i: str(i) for i in category_ids}
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    class_names = [category_names[cid] for cid in category_ids]

    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)

    paths, originals, targets, names = [], [], [], []
    for info in sorted(data["images"], key=lambda item: int(item["id"])):
        image_id = int(info["id"])
        file_name = str(info["file_name"])
        candidates = [folder / file_name, json_path.parent / file_name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise KdlabError(
                f"image '{file_name}' (id {image_id}) from {json_path.name} not found in '{folder}' "
                f"or next to the json: point images_dir at the image folder"
            )
        original = original_size(path)
        boxes, labels, areas, crowd = [], [], [], []
        for ann in per_image.get(image_id, []):
            category = int(ann["category_id"])
            if category not in label_of:
                raise KdlabError(
                    f"{json_path}: annotation {ann.get('id')} has unknown category_id {category}"
                )
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[category])
            areas.append(float(ann["area"]) if ann.get("area") is not None else math.nan)
            crowd.append(bool(ann.get("iscrowd", 0)))
        boxes_t, keep = clean_boxes(boxes, original[1], original[0], f"{json_path} image {file_name}")
        new_hw = target_size(*original, image_size)
        boxes_t = scale_boxes(boxes_t, original, new_hw)
        labels_t = torch.as_tensor(labels, dtype=torch.int64)
        areas_t = torch.as_tensor(areas, dtype=torch.float64)  # float64: a json area is kept exactly
        box_areas = ((boxes_t[:, 2] - boxes_t[:, 0]) * (boxes_t[:, 3] - boxes_t[:, 1])).double()
        areas_t = torch.where(torch.isnan(areas_t), box_areas,
                              areas_t * (new_hw[0] / original[0]) * (new_hw[1] / original[1]))
        crowd_t = torch.as_tensor(crowd, dtype=torch.bool)
        plain, crowded = keep & ~crowd_t, keep & crowd_t
        target = make_target(boxes_t[plain], labels_t[plain], image_id)
        target.update(area=areas_t[plain], crowd_boxes=boxes_t[crowded], crowd_labels=labels_t[crowded],
                      crowd_area=areas_t[crowded])
        paths.append(path)
        originals.append(original)
        targets.append(target)
        names.append(file_name)
    images = image_files_or_tensors(paths, originals, image_size, in_memory)
    return DetectionDataset(images, targets, class_names, names)


def plan_sizes(spec: Any) -> tuple[int, int | None, int, None]:
    """(train images, test images or None, classes, None) of a recipe's COCO jsons (their image and category
    lists, resolved as the loader resolves them); no image is read, so the image shape is unknown (None)."""
    base = Path(spec.root) if spec.root is not None else None
    if base is not None and not base.is_dir():
        raise KdlabError(f"data.root: COCO root '{spec.root}' does not exist: point data.root at the image folder")
    if spec.annotations is None:
        raise KdlabError("data.annotations: dataset coco needs the COCO json of the train split: set "
                         "data.annotations")

    def read(name: str, key: str) -> dict:
        path = resolve_annotation_path(base, name)  # as the loader resolves it
        if not path.is_file():
            raise KdlabError(f"data.{key}: COCO annotation file '{path}' not found: fix data.{key}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise KdlabError(f"data.{key}: '{path}' is not valid JSON ({error.msg}): fix the file") from None

    train = read(spec.annotations, "annotations")
    test = read(spec.test_annotations, "test_annotations") if spec.test_annotations else None
    return (len(train.get("images", [])), len(test.get("images", [])) if test else None,
            len(train.get("categories", [])), None)
