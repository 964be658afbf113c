"""COCO box AP with pycocotools, for kdlab's in-memory detection sets and torchvision detectors.

Units: every figure is a **percentage** (0-100 float), as in the detection papers' tables.
``APs``/``APm``/``APl`` use COCO's absolute area thresholds (32^2, 96^2 pixels) in the coordinates of the
evaluated images, i.e. after kdlab's ``image_size`` resize. A size range without any ground truth
(pycocotools' -1) is reported as NaN; no predictions at all gives 0.0.

Ground truth follows COCO's protocol (pycocotools ``cocoeval.py``): a target's ``area`` (the annotation's,
e.g. the segment area of a COCO object) decides its size bin, the box area when absent (VOC, synthetic);
crowd regions (``crowd_boxes``/``crowd_labels``/``crowd_area``) go in with ``iscrowd = 1``, so detections
matched to them count neither as true nor as false positives.
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

from kdlab.config.names import DETECTION_METRICS

__all__ = ["METRICS", "coco_box_ap", "evaluate_detector", "predict"]

#: keys returned by :func:`coco_box_ap`, in COCOeval ``stats`` order (first six entries).
METRICS = DETECTION_METRICS


def _xywh(boxes: Tensor) -> list[list[float]]:
    boxes = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([boxes[:, :2], wh], dim=1).tolist()


def _annotations(boxes: Any, labels: Any, areas: Any, image_id: int, crowd: int, first_id: int) -> list[dict]:
    """COCO ground-truth annotations of one image; ``areas`` None: the box areas."""
    xywh = _xywh(torch.as_tensor(boxes))
    labels = torch.as_tensor(labels).reshape(-1).tolist()
    areas = [w * h for _, _, w, h in xywh] if areas is None else torch.as_tensor(areas).reshape(-1).tolist()
    if not len(xywh) == len(labels) == len(areas):
        raise ValueError(f"image {image_id}: {len(xywh)} boxes, {len(labels)} labels and {len(areas)} areas")
    return [
        {"id": first_id + j, "image_id": image_id, "category_id": int(label), "bbox": box,
         "area": float(area), "iscrowd": crowd}
        for j, (box, label, area) in enumerate(zip(xywh, labels, areas))
    ]


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
    index is used when absent), optionally ``area`` and the crowd regions ``crowd_boxes``, ``crowd_labels``,
    ``crowd_area`` (see the module docstring); ground truth is built in memory from them.
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
    objects = 0  # non-crowd ground truth
    for index, (prediction, target) in enumerate(zip(predictions, targets)):
        image_id = _image_id(target, index)
        if image_id in seen:
            raise ValueError(f"image_id {image_id} appears twice: targets need unique image ids")
        seen.add(image_id)
        images.append({"id": image_id})
        plain = _annotations(target["boxes"], target["labels"], target.get("area"), image_id, 0,
                             len(annotations) + 1)
        objects += len(plain)
        annotations += plain
        if "crowd_boxes" in target:
            annotations += _annotations(target["crowd_boxes"], target["crowd_labels"],
                                        target.get("crowd_area"), image_id, 1, len(annotations) + 1)
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
    if not detections or not objects:
        if not objects:  # only crowd regions (or nothing): pycocotools gives -1 everywhere
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
    """Run ``model`` in eval mode over ``dataset`` (a :class:`~kdlab.data.detection.DetectionDataset`, in
    order); return CPU predictions and the ground truth
    (:meth:`~kdlab.data.detection.DetectionDataset.ground_truth`: with ``area`` and crowd regions where the
    annotations have them)."""
    from kdlab.data.detection import iterate_detection_batches

    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    predictions: list[dict[str, Tensor]] = []
    try:
        for images, _ in iterate_detection_batches(
            dataset, batch_size, shuffle=False, augment=False
        ):
            outputs = model([image.to(device) for image in images])
            predictions.extend({k: v.detach().to("cpu") for k, v in output.items()} for output in outputs)
    finally:
        model.train(was_training)
    return predictions, [dataset.ground_truth(i) for i in range(len(dataset))]


def evaluate_detector(
    model: nn.Module, dataset: Any, batch_size: int = 4, per_class: bool = False
) -> dict[str, float]:
    """COCO box AP (percent) of a torchvision detector on a :class:`~kdlab.data.detection.DetectionDataset`.

    The model runs in eval mode under ``no_grad`` (its previous mode is restored afterwards).
    """
    predictions, targets = predict(model, dataset, batch_size)
    return coco_box_ap(predictions, targets, dataset.class_names, per_class=per_class)
