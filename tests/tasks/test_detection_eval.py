"""Detection models (torchvision builders, FPN access) and COCO box AP."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from kdlab.data.detection import iterate_detection_batches, load_coco, make_synthetic_shapes
from kdlab.errors import KdlabError
from kdlab.models.detection import (
    build_detector,
    capture_fpn,
    check_fpn_compatible,
    fpn_levels,
    fpn_module_path,
)
from kdlab.tasks.detection_eval import METRICS, coco_box_ap, evaluate_detector

SIZE = 64


@pytest.fixture(scope="module")
def shapes():
    return make_synthetic_shapes(6, image_size=SIZE, seed=0)


def _perfect(targets):
    return [
        {
            "boxes": t["boxes"].clone(),
            "scores": torch.linspace(1.0, 0.5, len(t["labels"])),
            "labels": t["labels"].clone(),
        }
        for t in targets
    ]


# --------------------------------------------------------------------------- COCO AP
def test_coco_ap_perfect_is_100_and_perturbed_is_lower(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]
    perfect = coco_box_ap(_perfect(targets), targets, shapes.class_names, per_class=True)
    assert set(METRICS) <= set(perfect)
    assert perfect["AP"] == pytest.approx(100.0) and perfect["AP50"] == pytest.approx(100.0)
    assert perfect["AP75"] == pytest.approx(100.0)
    assert all(perfect[f"AP/{name}"] == pytest.approx(100.0) for name in shapes.class_names)

    shifted = _perfect(targets)
    for prediction in shifted:
        prediction["boxes"] += 3.0  # ~20% of a 12-20 px object
    moved = coco_box_ap(shifted, targets, shapes.class_names)
    assert moved["AP"] < 90.0 and moved["AP75"] < perfect["AP75"]

    shuffled = _perfect(targets)  # each image gets the next image's boxes
    boxes = [prediction["boxes"] for prediction in shuffled]
    for prediction, other in zip(shuffled, boxes[1:] + boxes[:1], strict=True):
        prediction["boxes"] = other[: len(prediction["boxes"])]
        prediction["labels"] = prediction["labels"][: len(other)]
        prediction["scores"] = prediction["scores"][: len(other)]
    assert coco_box_ap(shuffled, targets, shapes.class_names)["AP"] < 20.0

    swapped = _perfect(targets)
    for prediction in swapped:
        prediction["labels"] = prediction["labels"] % 3 + 1  # every box gets the wrong class
    assert coco_box_ap(swapped, targets, shapes.class_names)["AP"] == pytest.approx(0.0)


def test_coco_ap_without_predictions_is_zero(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]
    nothing = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    empty = [dict(nothing) for _ in targets]
    result = coco_box_ap(empty, targets, shapes.class_names)
    assert result == {name: 0.0 for name in METRICS}


def test_a_detector_that_ignores_the_image_is_flagged_weak_and_marked_in_tables(shapes) -> None:
    """The collapsed RetinaNet case: the same boxes and class for every image (scores that do not depend on it)."""
    import pandas as pd

    from kdlab.report.tables import markdown_table
    from kdlab.tasks.detection import weak_detector_reason

    targets = [shapes[i].target for i in range(len(shapes))]
    grid = torch.tensor([[x, y, x + 16.0, y + 16.0] for x in range(0, SIZE - 16, 8) for y in range(0, SIZE - 16, 8)])
    constant = [{"boxes": grid.clone(), "scores": torch.full((len(grid),), 0.23),
                 "labels": torch.full((len(grid),), 1, dtype=torch.int64)} for _ in targets]
    blind = {**coco_box_ap(constant, targets, shapes.class_names), "eval_n": len(targets)}
    perfect = {**coco_box_ap(_perfect(targets), targets, shapes.class_names), "eval_n": len(targets)}
    assert blind["AP50"] < 10.0 and weak_detector_reason(blind).startswith(f"weak: AP50 {blind['AP50']:.1f} %")
    assert weak_detector_reason(perfect) == "" and weak_detector_reason({"AP50": None}) == ""
    assert weak_detector_reason({"AP50": 10.0}) == "" and weak_detector_reason({"AP50": 9.9}) != ""  # the edge

    frame = pd.DataFrame({"cell": ["kind=ssim", "kind=ssim", "kind=none"], "seed": [0, 1, 0], "AP": [1.0, 2.0, 50.0],
                          "flag": [weak_detector_reason(blind), "", ""]})
    table = markdown_table(frame)
    assert "| kind=ssim ⚠ weak |" in table and "| kind=none |" in table


def test_coco_ap_size_range_without_ground_truth_is_nan(shapes) -> None:
    targets = [shapes[i].target for i in range(len(shapes))]  # 64 px images: no object above 96^2
    assert math.isnan(coco_box_ap(_perfect(targets), targets, shapes.class_names)["APl"])


# A hand-made COCO json: crowd regions (dets inside them must be ignored, not counted as false positives) and
# objects whose annotated ``area`` (the segmentation's) sits in another size bin than their box area.
# (width, height, [(category_id, bbox xywh, area, iscrowd)], [(category_id, bbox xywh, score)])
_COCO_IMAGES = {
    101: (320, 240,
          [(4, [10, 10, 40, 30], 600, 0),  # box 1200 (medium) -> area small
           (9, [60, 20, 100, 100], 5000, 0),  # box 10000 (large) -> area medium
           (4, [150, 100, 160, 120], 12000, 1),  # person crowd
           (4, [20, 150, 25, 25], 1100, 0)],  # box 625 (small) -> area medium
          [(4, [12, 11, 40, 30], 0.9), (9, [62, 25, 100, 95], 0.8),
           (4, [155, 105, 40, 40], 0.95), (4, [200, 150, 60, 60], 0.7),  # inside the person crowd
           (4, [230, 200, 30, 30], 0.85),  # 2/3 inside the crowd: ignored up to IoU 0.65 only
           (9, [160, 110, 50, 50], 0.75),  # a car on the person crowd: a false positive
           (4, [22, 152, 20, 22], 0.6)]),
    102: (300, 200,
          [(9, [30, 30, 120, 90], 9000, 0),  # box 10800 (large) -> area medium
           (4, [200, 40, 20, 40], 800, 0),
           (9, [0, 120, 300, 80], 15000, 1)],  # car crowd
          [(9, [35, 28, 115, 95], 0.88), (9, [10, 130, 100, 60], 0.92), (9, [240, 150, 55, 40], 0.5),
           (4, [198, 42, 22, 36], 0.65), (4, [100, 10, 30, 30], 0.4)]),
    103: (256, 256,
          [(4, [50, 50, 100, 100], 9500, 0), (9, [180, 180, 60, 60], 2000, 0)],
          [(4, [55, 45, 100, 100], 0.77), (9, [180, 180, 60, 60], 0.99), (9, [10, 10, 50, 50], 0.3),
           (4, [60, 60, 90, 90], 0.55)]),
}


def _write_crowd_coco(folder: Path) -> tuple[Path, list[dict]]:
    """The json of ``_COCO_IMAGES`` with its random-pixel images; the detections in COCO results form."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations, detections = [], [], []
    for image_id, (width, height, objects, found) in _COCO_IMAGES.items():
        pixels = np.random.default_rng(image_id).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": width, "height": height})
        for category, bbox, area, crowd in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": bbox, "area": area, "iscrowd": crowd})
        detections += [{"image_id": image_id, "category_id": c, "bbox": b, "score": s} for c, b, s in found]
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 9, "name": "car"}, {"id": 4, "name": "person"}]}
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path, detections


class _FixedDetector(nn.Module):
    """Returns the hand-made detections of each image (recognised by its size), as a torchvision detector."""

    def __init__(self, label_of: dict[int, int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = {}
        for width, height, _, found in _COCO_IMAGES.values():
            boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h), _ in found], dtype=torch.float32)
            self.outputs[(height, width)] = {
                "boxes": boxes,
                "scores": torch.tensor([s for *_, s in found]),
                "labels": torch.tensor([label_of[c] for c, *_ in found]),
            }

    def forward(self, images):
        return [{k: v.clone() for k, v in self.outputs[tuple(image.shape[-2:])].items()} for image in images]


def test_coco_ap_matches_pycocotools_on_json_with_crowd_and_segment_areas(tmp_path: Path) -> None:
    annotation, detections = _write_crowd_coco(tmp_path / "images")
    with contextlib.redirect_stdout(io.StringIO()):
        reference_gt = COCO(str(annotation))
        evaluator = COCOeval(reference_gt, reference_gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    reference = dict(zip(METRICS, (float(v) * 100.0 for v in evaluator.stats[:6]), strict=True))
    assert all(value > 0 for value in reference.values())  # every size bin has ground truth and a match

    dataset = load_coco(tmp_path / "images", annotation)
    assert dataset.class_names == ["person", "car"]  # category ids 4, 9 -> labels 1, 2
    result = evaluate_detector(_FixedDetector({4: 1, 9: 2}), dataset, batch_size=2)
    assert result == pytest.approx(reference, abs=1e-9)


# --------------------------------------------------------------------------- detectors
@pytest.mark.parametrize(
    "arch,backbone", [("fasterrcnn", "resnet18"), ("fasterrcnn", "mobilenet_v3"), ("retinanet", "resnet18")]
)
def test_build_detector_trains_and_predicts(shapes, arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = build_detector(arch, backbone, num_classes=shapes.num_classes + 1, min_size=SIZE, max_size=SIZE)
    images, targets = next(iterate_detection_batches(shapes, 2))
    model.train()
    losses = model(images, targets)
    if arch == "fasterrcnn":
        expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    else:
        expected = {"classification", "bbox_regression"}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        predictions = model(images)
    assert len(predictions) == 2
    for prediction in predictions:
        assert set(prediction) == {"boxes", "scores", "labels"} and prediction["boxes"].shape[-1] == 4
        assert prediction["boxes"].shape[0] <= 100


def test_build_detector_rejects_unknown_names() -> None:
    with pytest.raises(KdlabError, match="unknown detector arch 'yolo'.*fasterrcnn, retinanet"):
        build_detector("yolo", "resnet18", 4)
    with pytest.raises(KdlabError, match="unknown detector backbone 'vgg16'.*resnet18.*mobilenet_v3"):
        build_detector("fasterrcnn", "vgg16", 4)
    with pytest.raises(KdlabError, match="unknown detector option 'rpn_topk'.*representation_size"):
        build_detector("fasterrcnn", "resnet18", 4, rpn_topk=3)
    with pytest.raises(KdlabError, match="'representation_size' applies to fasterrcnn only"):
        build_detector("retinanet", "resnet18", 4, representation_size=64)
    with pytest.raises(KdlabError, match="count the background"):
        build_detector("fasterrcnn", "resnet18", 1)


def test_retinanet_head_norm_is_torchvisions_v1_or_v2_head() -> None:
    from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

    def norms(model: nn.Module) -> list[tuple[int, int]]:
        return [(m.num_groups, m.num_channels) for m in model.head.modules() if isinstance(m, nn.GroupNorm)]

    v1, v2 = (f(weights=None, weights_backbone=None, num_classes=4) for f in (retinanet_resnet50_fpn,
                                                                           retinanet_resnet50_fpn_v2))
    assert norms(build_detector("retinanet", "resnet18", 4, SIZE, SIZE)) == norms(v1) == []
    assert norms(build_detector("retinanet", "resnet18", 4, SIZE, SIZE, head_norm="groupnorm")) == norms(v2)
    small = build_detector("retinanet", "resnet18", 4, SIZE, SIZE, head_norm="groupnorm", fpn_channels=64)
    assert norms(small) == [(32, 64)] * len(norms(v2))
    with pytest.raises(KdlabError, match="unknown head_norm 'gn'.*none, groupnorm"):
        build_detector("retinanet", "resnet18", 4, head_norm="gn")
    with pytest.raises(KdlabError, match="divisible by 32"):
        build_detector("retinanet", "resnet18", 4, head_norm="groupnorm", fpn_channels=48)
    with pytest.raises(KdlabError, match="'head_norm' applies to retinanet only"):
        build_detector("fasterrcnn", "resnet18", 4, head_norm="groupnorm")


def test_presets_set_detector_sizes() -> None:
    cpu = build_detector("fasterrcnn", "resnet18", 4, SIZE, SIZE)
    assert cpu.rpn._post_nms_top_n == {"training": 300, "testing": 300}
    assert cpu.roi_heads.box_predictor.cls_score.in_features == 256
    full = build_detector(
        "fasterrcnn", "resnet18", 4, SIZE, SIZE, preset="torchvision", rpn_post_nms_top_n_test=50
    )
    assert full.rpn._post_nms_top_n == {"training": 2000, "testing": 50}
    assert full.roi_heads.box_predictor.cls_score.in_features == 1024


# --------------------------------------------------------------------------- FPN access
def test_fpn_levels_align_for_teacher_and_student(shapes) -> None:
    teacher = build_detector("fasterrcnn", "resnet34", 4, min_size=SIZE, max_size=96).eval()
    student = build_detector("fasterrcnn", "resnet18", 4, min_size=SIZE, max_size=96)
    check_fpn_compatible(teacher, student)
    assert fpn_module_path(student) == "backbone"
    images, targets = next(iterate_detection_batches(shapes, 2))
    with torch.no_grad():
        teacher_levels = fpn_levels(teacher, images)
    student_levels = fpn_levels(student, images)
    assert list(teacher_levels) == list(student_levels) == ["0", "1", "2", "3", "pool"]
    for name in teacher_levels:
        assert teacher_levels[name].shape == student_levels[name].shape
    assert student_levels["0"].shape == (2, 256, SIZE // 4, SIZE // 4)
    assert student_levels["0"].requires_grad

    with capture_fpn(student) as captured:
        student(images, targets)
    assert [v.shape for v in captured.values()] == [v.shape for v in student_levels.values()]
    assert captured["0"].grad_fn is not None


def test_check_fpn_compatible_rejects_different_sizes() -> None:
    teacher = build_detector("fasterrcnn", "resnet18", 4, min_size=SIZE, max_size=SIZE)
    student = build_detector("fasterrcnn", "resnet18", 4, min_size=48, max_size=SIZE)
    with pytest.raises(KdlabError, match="identical min_size/max_size"):
        check_fpn_compatible(teacher, student)
    mobile = build_detector("fasterrcnn", "mobilenet_v3", 4, min_size=SIZE, max_size=SIZE)
    with pytest.raises(KdlabError, match="FPN levels differ"):
        check_fpn_compatible(teacher, mobile)


def test_evaluate_detector_runs_in_eval_mode_and_restores_mode(shapes) -> None:
    torch.manual_seed(0)
    model = build_detector("fasterrcnn", "resnet18", 4, SIZE, SIZE, rpn_post_nms_top_n_test=50)
    model.train()
    result = evaluate_detector(model, shapes, batch_size=3)
    assert set(result) == set(METRICS)
    assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in result.values())
    assert model.training


def test_fpn_channels_option_and_channel_check(shapes) -> None:
    teacher = build_detector("retinanet", "resnet18", 4, SIZE, SIZE)
    narrow = build_detector("retinanet", "resnet18", 4, SIZE, SIZE, fpn_channels=64)
    images, targets = next(iterate_detection_batches(shapes, 2))
    levels = fpn_levels(narrow, images)
    assert list(levels) == ["0", "1", "2", "p6", "p7"] and all(v.shape[1] == 64 for v in levels.values())
    assert set(narrow(images, targets)) == {"classification", "bbox_regression"}
    with pytest.raises(KdlabError, match="FPN channels differ.*adapter"):
        check_fpn_compatible(teacher, narrow)
    check_fpn_compatible(teacher, narrow, adapter=True)
