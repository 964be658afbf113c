"""COCO box AP with pycocotools, for kdlab's in-memory detection sets and torchvision detectors.

Units: every figure is a **percentage** (0-100 float), as in the detection papers' tables.
``APs``/``APm``/``APl`` use COCO's absolute area thresholds (32^2, 96^2 pixels) in the coordinates of the
evaluated images, i.e. after kdlab's ``image_size`` resize. A size range without any ground truth
(pycocotools' -1) is reported as NaN; no predictions at all gives 0.0.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["METRICS", "coco_box_ap", "evaluate_detector", "predict"]

#: keys returned by :func:`coco_box_ap`, in COCOeval ``stats`` order (first six entries).
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _xywh(boxes: Tensor) -> list[list[float]]:
    boxes = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([boxes[:, :2], wh], dim=1).tolist()


def _image_id(target: dict[str, Any], index: int) -> int:
    value = target.get("image_id", index)
    return int(value.item() if isinstance(value, Tensor) else value)


def coco_box_ap(
    predictions: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    per_class: bool = False,
) -> dict[str, float]:
    """COCO box AP of ``predictions`` against ``targets`` (aligned lists, one entry per image).

    ``predictions[i]``: ``boxes`` (N x 4 xyxy), ``scores`` (N), ``labels`` (N, 1-based), as a torchvision
    detector returns them in eval mode. ``targets[i]``: ``boxes``, ``labels`` and ``image_id`` (the list
    index is used when absent). Ground truth is built in memory (area = box area, ``iscrowd = 0``).
    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in percent, plus ``"AP/<class>"`` entries
    when ``per_class``. pycocotools' console output is swallowed.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    categories = [{"id": i + 1, "name": str(name)} for i, name in enumerate(class_names)]
    valid_labels = {c["id"] for c in categories}
    images, annotations, detections = [], [], []
    seen: set[int] = set()
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        image_id = _image_id(target, index)
        if image_id in seen:
            raise ValueError(f"image_id {image_id} appears twice: targets need unique image ids")
        seen.add(image_id)
        images.append({"id": image_id})
        labels = torch.as_tensor(target["labels"]).reshape(-1).tolist()
        for box, label in zip(_xywh(torch.as_tensor(target["boxes"])), labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        scores = torch.as_tensor(prediction["scores"]).reshape(-1).tolist()
        pred_labels = torch.as_tensor(prediction["labels"]).reshape(-1).tolist()
        for box, score, label in zip(_xywh(torch.as_tensor(prediction["boxes"])), scores, pred_labels):
            if int(label) in valid_labels:
                detections.append(
                    {"image_id": image_id, "category_id": int(label), "bbox": box, "score": float(score)}
                )

    empty = {name: 0.0 for name in METRICS}
    if per_class:
        empty.update({f"AP/{c['name']}": 0.0 for c in categories})
    if not detections or not annotations:
        if not annotations:
            empty = {k: math.nan for k in empty}
        return empty

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        ground_truth.createIndex()
        results = ground_truth.loadRes(detections)
        evaluator = COCOeval(ground_truth, results, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    metrics = {
        name: (math.nan if stats[i] < 0 else float(stats[i]) * 100.0) for i, name in enumerate(METRICS)
    }
    if per_class:
        # precision: [T iou thresholds, R recall points, K classes, A areas, M max-dets];
        # area range "all" (index 0), maxDets 100 (last)
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        for k, category in enumerate(categories):
            values = precision[:, :, k]
            values = values[values > -1]
            metrics[f"AP/{category['name']}"] = float(np.mean(values)) * 100.0 if values.size else math.nan
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Any, batch_size: int = 4
) -> tuple[list[dict[str, Tensor]], list[dict]]:
    """Run ``model`` in eval mode over ``dataset`` (in order); return CPU predictions and the targets."""
    from kdlab.data.detection import iterate_detection_batches

    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    predictions: list[dict[str, Tensor]] = []
    targets: list[dict] = []
    try:
        for images, batch_targets in iterate_detection_batches(
            dataset, batch_size, shuffle=False, augment=False
        ):
            outputs = model([image.to(device) for image in images])
            predictions.extend({k: v.detach().to("cpu") for k, v in output.items()} for output in outputs)
            targets.extend(batch_targets)
    finally:
        model.train(was_training)
    return predictions, targets


def evaluate_detector(
    model: nn.Module, dataset: Any, batch_size: int = 4, per_class: bool = False
) -> dict[str, float]:
    """COCO box AP (percent) of a torchvision detector on a :class:`~kdlab.data.detection.DetectionDataset`.

    The model runs in eval mode under ``no_grad`` (its previous mode is restored afterwards).
    """
    predictions, targets = predict(model, dataset, batch_size)
    return coco_box_ap(predictions, targets, dataset.class_names, per_class=per_class)
